"""python -m experiments.sweep NAME [--size quick|cpu|full] [--parallel N] [--retry-failed]
                                    [--root runs/sweeps] [--dry-run] [key=value ...]

Thin entry point: look the sweep up in experiments.sweeps, apply any base overrides, hand it
to research.sweeps.runner.run (which validates every point first and reports all problems
at once), then write the report (table and plots) next to the runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from experiments import sweeps
from research.config import overrides as overrides_lib
from research.sweeps import SIZES, Sweep, SweepError, check, report, runner, tuning


def parse(argv=None) -> tuple[argparse.Namespace, Sweep]:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.sweep", description="Run a named sweep.",
      epilog="sweeps:\n  " + "\n  ".join(sweeps.describe()),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", help="a sweep of experiments/sweeps/")
  parser.add_argument("--size", choices=SIZES, default="quick",
                      help="quick: minutes; cpu: near convergence, up to ~2 h on 2 cores with "
                           "--parallel 2; full: an accelerator")
  parser.add_argument("--parallel", type=int, default=1, help="points run at once, each in its own process")
  parser.add_argument("--retry-failed", action="store_true", help="run points that failed before again")
  parser.add_argument("--root", default="runs/sweeps", help="runs go to ROOT/NAME/SIZE/POINT")
  parser.add_argument("--dry-run", action="store_true", help="validate and list the points, run nothing")
  parser.add_argument("--no-report", action="store_true", help="skip the plots after running")
  parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to the base config")
  args = parser.parse_intermixed_args(argv)
  try:
    sweep = sweeps.get(args.name, args.size)
    if args.overrides:
      sweep = dataclasses.replace(sweep, base=overrides_lib.apply(sweep.base, args.overrides))
  except ValueError as err:
    parser.error(str(err))
  return args, sweep


def main(argv=None) -> int:
  args, sweep = parse(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  try:
    if args.dry_run:
      configs = check.point_configs(sweep)
      print(f"sweep {sweep.id}: {len(configs)} valid points -> {runner.sweep_dir(args.root, sweep)}")
      points = sweep.points if sweep.tune is None else tuning.grid_points(sweep.points, sweep.tune)
      for point in points:
        print(f"  {point.name}: " + " ".join(f"{k}={v}" for k, v in point.overrides.items()))
      if sweep.tune is not None:
        t = sweep.tune
        more = len(sweep.points) * (t.seeds - min(t.grid_seeds, t.seeds))
        print(f"then {t.seeds} seeds of each variant at its best {t.axis} ({more} more runs): "
              f"{len(points) + more} runs in all")
      return 0
    outcomes = runner.run(sweep, args.root, parallel=args.parallel, retry_failed=args.retry_failed)
  except SweepError as err:
    print(err, file=sys.stderr)
    return 2
  if not args.no_report:
    paths = report.write(runner.sweep_dir(args.root, sweep))
    print("report: " + ", ".join(str(p) for p in paths if p.suffix == ".png"))
    print(next(p for p in paths if p.name == f"{report.SUMMARY_FILE}.md").read_text())
  return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
  sys.exit(main())
