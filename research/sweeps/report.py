"""A sweep's report, regenerated from its run directories: the tables and the plots.

    paths = report.write(sweep_dir)                  # into the sweep directory
    paths = report.write(sweep_dir, out_dir="experiments/results/position")

Written: `results.csv/.jsonl` (one row per run, research.sweeps.results), `summary.csv/.jsonl`
and `summary.md` (one row per variant and metric: mean, interval, verdict against the
reference; research.sweeps.compare), for a tuned sweep `tuning.csv` (each variant's loss at
each grid value), and the plots the sweep's manifest (sweep.json, written by the launcher)
names. Nothing here needs the sweep's definition, so a copied directory of runs reports alike.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from research.sweeps import compare, results
from research.sweeps import plots as plots_lib

SUMMARY_FILE = "summary"
TUNING_FILE = "tuning.csv"
# The summary columns summary.md shows (the CSV has them all).
_MARKDOWN = ("variant", "metric", "n", "mean", "std", "ci95", "diff", "diff_ci95", "p_value", "verdict")


def analyse(sweep_dir: str | pathlib.Path) -> compare.Analysis:
  """The sweep's Analysis from its run directories and manifest."""
  sweep_dir = pathlib.Path(sweep_dir)
  if not sweep_dir.is_dir():
    raise FileNotFoundError(f"{sweep_dir} is not a directory of sweep runs")
  manifest_path = sweep_dir / "sweep.json"
  manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
  rows = results.collect(sweep_dir)
  if not rows:
    raise FileNotFoundError(f"{sweep_dir} holds no sweep points (no */point.json)")
  return compare.analyse(rows, manifest)


def write(sweep_dir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None,
          plots: Sequence[str] | None = None) -> list[pathlib.Path]:
  """Writes the tables and each plot (PNG and SVG); returns the paths."""
  sweep_dir = pathlib.Path(sweep_dir)
  out_dir = pathlib.Path(out_dir or sweep_dir)
  analysis = analyse(sweep_dir)
  names = list(plots if plots is not None else analysis.manifest.get("plots", ("curves", "final")))
  if plots is None and analysis.tune is not None and "tuning" not in names:
    names.append("tuning")
  unknown = [n for n in names if n not in plots_lib.PLOTS]
  if unknown:
    raise ValueError(f"unknown plot(s) {unknown}; known: {', '.join(plots_lib.PLOTS)}")
  results.write_table(sweep_dir, analysis.rows, out_dir)
  paths = [out_dir / results.CSV_FILE, out_dir / results.JSONL_FILE]
  paths += write_summary(analysis, out_dir)
  for name in names:
    paths += plots_lib.PLOTS[name](analysis, sweep_dir, out_dir)
  return paths


def write_summary(analysis: compare.Analysis, out_dir: pathlib.Path) -> list[pathlib.Path]:
  """summary.csv/.jsonl/.md and, for a tuned sweep, tuning.csv."""
  out_dir.mkdir(parents=True, exist_ok=True)
  results.write_csv(out_dir / f"{SUMMARY_FILE}.csv", analysis.summary)
  (out_dir / f"{SUMMARY_FILE}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in analysis.summary))
  tune = analysis.tune
  columns = list(_MARKDOWN)
  if tune is not None:
    columns[2:2] = [tune.axis, f"{tune.axis}_edge", f"{tune.axis}_sensitivity"]
  (out_dir / f"{SUMMARY_FILE}.md").write_text(markdown_table(_readable(analysis.summary), columns) + "\n")
  paths = [out_dir / f"{SUMMARY_FILE}.{ext}" for ext in ("csv", "jsonl", "md")]
  if tune is not None:
    results.write_csv(out_dir / TUNING_FILE, compare.grid_rows(analysis))
    paths.append(out_dir / TUNING_FILE)
  return paths


def _readable(summary):
  """Summary rows with each interval as one `[low, high]` cell."""

  def span(low, high):
    return None if low is None else f"[{low:.3f}, {high:.3f}]"

  return [{**r, "ci95": span(r["ci95_low"], r["ci95_high"]),
           "diff_ci95": span(r["diff_ci95_low"], r["diff_ci95_high"])} for r in summary]


def markdown_table(rows, columns: Sequence[str], digits: int = 3) -> str:
  """A GitHub-markdown table of `columns` (for READMEs and notebooks)."""

  def cell(v):
    if isinstance(v, bool):
      return str(v).lower()
    if isinstance(v, float):
      if v != 0 and abs(v) < 10 ** -digits:
        return f"{v:.2g}"
      return f"{v:,.{digits}f}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
      return f"{v:,}"
    return "n/a" if v is None else str(v)

  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines)
