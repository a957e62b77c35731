"""python -m research.train --config NAME_OR_FILE --workdir DIR [key=value ...]

Thin entry point: parse, build the config, hand it to research.train.loop.train.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing

from research.config import overrides as overrides_lib
from research.config import registry
from research.config.experiment import ExperimentConfig


def _field_lines(cls, prefix: str = "") -> list[str]:
  hints = typing.get_type_hints(cls)
  lines = []
  for f in dataclasses.fields(cls):
    hint = hints[f.name]
    if dataclasses.is_dataclass(hint):
      lines += _field_lines(hint, f"{prefix}{f.name}.")
    else:
      default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
      type_name = getattr(hint, "__name__", str(hint)).replace("typing.", "")
      lines.append(f"  {prefix}{f.name} ({type_name}) = {default!r}")
  return lines


def _epilog() -> str:
  return ("configs (--config NAME, or a .json / .py file defining get_config()):\n  "
          + "\n  ".join(registry.describe()) + "\n\n"
          "overridable keys (key=value; defaults shown are the dataclass defaults, a config may "
          "change them):\n" + "\n".join(_field_lines(ExperimentConfig)))


def parse(argv=None) -> tuple[ExperimentConfig, argparse.Namespace]:
  parser = argparse.ArgumentParser(
      prog="python -m research.train", description="Train a model from a named config.",
      epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="default", help="a registered config name or a file")
  parser.add_argument("--workdir", required=True, help="run directory; re-running resumes it")
  parser.add_argument("--print-config", action="store_true", help="print the config and exit")
  cluster = parser.add_argument_group("multi-host (see research/distributed.py)")
  cluster.add_argument("--coordinator", help="host:port of process 0 (or RESEARCH_COORDINATOR)")
  cluster.add_argument("--num-processes", type=int, help="processes in the run")
  cluster.add_argument("--process-id", type=int, help="this process's index")
  cluster.add_argument("--distributed", action="store_true",
                       help="auto-detect the cluster (SLURM, TPU pod, Open MPI)")
  parser.add_argument("overrides", nargs="*", metavar="key=value")
  args = parser.parse_args(argv)
  try:
    config = overrides_lib.apply(registry.get(args.config), args.overrides)
  except ValueError as err:
    parser.error(str(err))
  return config, args


def main(argv=None) -> int:
  config, args = parse(argv)
  if args.print_config:
    import json

    print(json.dumps(config.to_dict(), indent=2))
    return 0
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  from research import distributed

  distributed.initialize(distributed.ClusterSpec.from_args(
      args.coordinator, args.num_processes, args.process_id, args.distributed))
  from research.train import loop

  loop.train(config, args.workdir)
  return 0


if __name__ == "__main__":
  sys.exit(main())
