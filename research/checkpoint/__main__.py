"""python -m research.checkpoint verify RUN_DIR [--no-values]

Lists every checkpointed step of a run as valid or invalid, and why (a file that is missing,
truncated or does not match its sha256; values that are not finite). Exits 0 when every step
is valid, 1 when some step is invalid, 2 when no step is valid.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from research.checkpoint import INVALID_DIR, verify_run


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m research.checkpoint", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  verify = sub.add_parser("verify", help="check every step's manifest and values")
  verify.add_argument("run_dir", type=pathlib.Path)
  verify.add_argument("--no-values", action="store_true",
                      help="check sizes and checksums only; do not restore the arrays")
  args = parser.parse_args(argv)
  report = verify_run(args.run_dir, values=not args.no_values)
  if not report:
    print(f"{args.run_dir}: no checkpoints")
    return 2
  for step, reason in report:
    print(f"step {step:>8}: {'valid' if reason is None else 'INVALID: ' + reason}")
  quarantined = args.run_dir / INVALID_DIR
  if quarantined.is_dir():
    print(f"quarantined earlier (see INVALID.txt in each): "
          f"{', '.join(sorted(p.name for p in quarantined.iterdir()))}")
  valid = sum(reason is None for _, reason in report)
  print(f"{valid} of {len(report)} steps valid")
  return 0 if valid == len(report) else (1 if valid else 2)


if __name__ == "__main__":
  sys.exit(main())
