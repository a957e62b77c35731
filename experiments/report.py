"""python -m experiments.report NAME [--size quick|cpu|full] [--root runs/sweeps] [--out DIR]

Regenerates a sweep's results table (CSV, JSONL), its summary (mean, 95% interval and verdict
against the reference per variant; the tuned learning rates) and plots (PNG, SVG) from its run
directories (ROOT/NAME/SIZE), into the sweep directory or DIR, and prints the summary. NAME
may also be the path of a sweep directory.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from research.sweeps import SIZES, report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n\n")[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", help="a sweep name, or the path of a sweep directory")
  parser.add_argument("--size", choices=SIZES, default="quick")
  parser.add_argument("--root", default="runs/sweeps")
  parser.add_argument("--out", help="where the table and plots go (default: the sweep directory)")
  parser.add_argument("--plots", help="comma-separated plot names (default: the sweep's own)")
  args = parser.parse_args(argv)
  path = pathlib.Path(args.name)
  sweep_dir = path if path.is_dir() else pathlib.Path(args.root) / args.name / args.size
  try:
    paths = report.write(sweep_dir, args.out, args.plots.split(",") if args.plots else None)
  except (FileNotFoundError, ValueError) as err:
    print(err, file=sys.stderr)
    return 2
  for p in paths:
    print(p)
  summary = next(p for p in paths if p.name == f"{report.SUMMARY_FILE}.md")
  print(summary.read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
