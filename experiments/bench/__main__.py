"""python -m experiments.bench SUBCOMMAND [--size tiny|cpu|full] [--out DIR]

Thin dispatcher: find the subcommand's module, run it at the size, print its table and
write DIR/SUBCOMMAND-SIZE.json (rows plus the machine they were measured on) and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys

from experiments import bench
from experiments.bench._common import machine, table


def main(argv=None) -> int:
  names = bench.subcommands()
  lines = []
  for name in names:
    doc = (bench.load(name).__doc__ or "").strip().splitlines()
    lines.append(f"  {name:12s} {doc[0] if doc else ''}")
  parser = argparse.ArgumentParser(
      prog="python -m experiments.bench", description="Run one benchmark and record its table.",
      epilog="subcommands:\n" + "\n".join(lines), formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("subcommand", choices=names)
  parser.add_argument("--size", choices=bench.SIZES, default="cpu")
  parser.add_argument("--out", default="experiments/results/bench",
                      help="directory for the JSON and Markdown")
  args = parser.parse_args(argv)
  module = bench.load(args.subcommand)
  if args.size not in getattr(module, "SIZES", bench.SIZES):
    parser.error(f"{args.subcommand} supports --size {', '.join(module.SIZES)}")
  started = datetime.datetime.now(datetime.timezone.utc)
  rows = module.run(args.size)
  text = table(rows)
  notes = getattr(module, "NOTES", "")
  print(text + (f"\n\n{notes}" if notes else ""))
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  stem = out / f"{args.subcommand}-{args.size}"
  record = {"subcommand": args.subcommand, "size": args.size, "started": started.isoformat(),
            "seconds": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
            "machine": machine(), "rows": rows, "notes": notes}
  stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
  stem.with_suffix(".md").write_text(text + "\n")
  print(f"\nwrote {stem}.json and {stem}.md", file=sys.stderr)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
