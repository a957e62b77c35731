"""python -m experiments.bench SUBCOMMAND [--size tiny|cpu|full] [--out DIR] [--reps N]"""

from __future__ import annotations

import argparse
import importlib
import sys

from experiments.bench import SUBCOMMANDS, common


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__)
  parser.add_argument("subcommand", choices=sorted(SUBCOMMANDS))
  parser.add_argument("--size", default="cpu",
                      help="tiny (seconds: CI), cpu (the 2-core development machine), full (accelerators)")
  parser.add_argument("--out", default="experiments/results", help="directory for the JSON results")
  parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default: per size)")
  args = parser.parse_args(argv)
  module = importlib.import_module(SUBCOMMANDS[args.subcommand])
  if args.size not in module.SIZES:
    parser.error(f"--size={args.size!r} is not one of: {', '.join(module.SIZES)}")
  rows = module.run(args.size, args.reps)
  print(common.table(rows))
  path = common.write(args.out, args.subcommand, args.size, rows)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
