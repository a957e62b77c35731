"""A sweep's report, regenerated from its run directories: the results table and the plots.

    paths = report.write(sweep_dir)                  # into the sweep directory
    paths = report.write(sweep_dir, out_dir="experiments/results/position")

The plots drawn are those the sweep's manifest (sweep.json, written by the launcher) names;
nothing here needs the sweep's definition, so a copied directory of runs reports alike.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from research.sweeps import plots as plots_lib
from research.sweeps import results


def write(sweep_dir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None,
          plots: Sequence[str] | None = None) -> list[pathlib.Path]:
  """Writes results.csv, results.jsonl and each plot (PNG and SVG); returns the paths."""
  sweep_dir = pathlib.Path(sweep_dir)
  if not sweep_dir.is_dir():
    raise FileNotFoundError(f"{sweep_dir} is not a directory of sweep runs")
  out_dir = pathlib.Path(out_dir or sweep_dir)
  manifest_path = sweep_dir / "sweep.json"
  manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
  names = list(plots if plots is not None else manifest.get("plots", ("curves", "final")))
  unknown = [n for n in names if n not in plots_lib.PLOTS]
  if unknown:
    raise ValueError(f"unknown plot(s) {unknown}; known: {', '.join(plots_lib.PLOTS)}")
  rows = results.collect(sweep_dir)
  if not rows:
    raise FileNotFoundError(f"{sweep_dir} holds no sweep points (no */point.json)")
  results.write_table(sweep_dir, rows, out_dir)
  paths = [out_dir / results.CSV_FILE, out_dir / results.JSONL_FILE]
  for name in names:
    paths += plots_lib.PLOTS[name](rows, sweep_dir, out_dir)
  return paths


def markdown_table(rows, columns: Sequence[str], digits: int = 3) -> str:
  """A GitHub-markdown table of `columns` (for READMEs and notebooks)."""

  def cell(v):
    if isinstance(v, float):
      return f"{v:,.{digits}f}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
      return f"{v:,}"
    return "n/a" if v is None else str(v)

  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines)
