"""python -m research.sweeps.worker RUN_DIR: runs one sweep point in its own process.

The launcher starts one per point when `--parallel N` > 1; the point's config and measures
are in RUN_DIR/point.json, and the outcome goes to RUN_DIR/status.json (exit code 0 when
the point is done or diverged, 1 when it failed).
"""

from __future__ import annotations

import logging
import sys

from research.sweeps import runner


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print("usage: python -m research.sweeps.worker RUN_DIR", file=sys.stderr)
    return 2
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  return 0 if runner.run_point(argv[0]) in runner.FINISHED else 1


if __name__ == "__main__":
  sys.exit(main())
