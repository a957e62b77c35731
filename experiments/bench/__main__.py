"""python -m experiments.bench SUBCOMMAND [--size tiny|cpu|full] [--out DIR]

Thin dispatcher: find the subcommand's module, run it at the size, print its table and
write DIR/SUBCOMMAND-SIZE.json (rows plus the machine they were measured on) and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys

from experiments import bench


def table(rows: list[dict]) -> str:
  """A Markdown table of rows (columns in first-seen order)."""
  columns: list[str] = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  cell = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def machine() -> dict:
  import jax

  device = jax.devices()[0]
  return {"platform": jax.default_backend(), "device": getattr(device, "device_kind", str(device)),
          "devices": jax.device_count(), "cpus": os.cpu_count(), "python": platform.python_version(),
          "jax": jax.__version__, "host": platform.node(),
          "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


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
  parser.add_argument("--out", default="runs/bench", help="directory for the JSON and Markdown")
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
