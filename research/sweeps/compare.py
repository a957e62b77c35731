"""What a sweep concludes, from its results rows and manifest: per-variant statistics, the tuned
learning rates, and a verdict for each variant against the reference.

    analysis = compare.analyse(results.collect(sweep_dir), manifest)
    analysis.summary      # one row per variant and metric (columns below)
    analysis.compared     # the runs behind the summary
    analysis.choices      # tuned sweeps: variant -> research.sweeps.tuning.Choice

Summary columns: `variant`, its axis labels (`tag.*`), `metric`, `n` (seeds), `mean`, `std`,
`ci95_low`/`ci95_high` (Student t), `diff` (mean minus the reference's), `diff_ci95_low`/
`diff_ci95_high` and `p_value` (Welch), `verdict` (`better`, `worse`, `not resolved (N
seeds)`, `reference`, `no data`, `no reference data`) and, for a tuned sweep, the chosen
value (`lr`), `lr_edge` (`low`/`high` when the best value is the grid's lowest/highest: the
grid should be extended), `lr_sensitivity` (Wortsman et al. 2023) and `lr_diverged` (grid
values whose run diverged).

The compared runs are every finished run of a plain sweep, and each variant's seeds at its
chosen value for a tuned one. A loss of a run that diverged or ended non-finite counts as the
loss at initialisation (the run is a result); other metrics count finite values only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from research.sweeps import hyper, stats, tuning
from research.sweeps.results import group_key

FINISHED = ("done", "diverged")


@dataclasses.dataclass
class Analysis:
  rows: list[dict[str, Any]]  # every run
  compared: list[dict[str, Any]]  # the runs the statistics are over
  summary: list[dict[str, Any]]  # one row per variant and metric
  choices: dict[str, tuning.Choice]  # tuned sweeps: variant -> its grid and best value
  manifest: dict[str, Any]
  variants: list[str]

  @property
  def tune(self) -> tuning.Tune | None:
    spec = self.manifest.get("tune")
    return tuning.Tune(**{**spec, "values": tuple(spec["values"])}) if spec else None

  @property
  def exclude(self) -> tuple[str, ...]:
    """Axis labels that do not name a variant: the seed and the tuned axis."""
    return ("seed",) + ((self.tune.axis,) if self.tune else ())

  def variant(self, row: Mapping[str, Any]) -> str:
    return group_key(dict(row), self.exclude)

  def values(self, variant: str, metric: str) -> list[float]:
    """The compared runs' values of `metric` for `variant`."""
    return [v for r in self.compared if self.variant(r) == variant
            if (v := value(r, metric)) is not None]


def value(row: Mapping[str, Any], metric: str) -> float | None:
  """A finished run's value of `metric`: a loss of a diverged or non-finite run is the loss at
  initialisation; a missing value (not measurable) or any other non-finite value is None."""
  if row.get("status") not in FINISHED:
    return None
  v = row.get(metric)
  if "loss" in metric and "init_loss" in row and (
      row["status"] == "diverged" or (isinstance(v, float) and not math.isfinite(v))):
    return float(row["init_loss"])
  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
    return float(v)
  return None


def _variants(rows: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any], exclude) -> list[str]:
  out = list(manifest.get("variants") or [])
  for r in rows:
    name = group_key(dict(r), exclude)
    if name not in out:
      out.append(name)
  return out


def analyse(rows: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any]) -> Analysis:
  rows = [dict(r) for r in rows]
  analysis = Analysis(rows, [], [], {}, dict(manifest), [])
  tune = analysis.tune
  analysis.variants = _variants(rows, manifest, analysis.exclude)
  if tune is None:
    analysis.compared = [r for r in rows if r["status"] in FINISHED]
  else:
    analysis.choices = tuning.choices(rows, analysis.variants, tune)
    chosen = {v: hyper.label(c.best) for v, c in analysis.choices.items() if c.complete}
    seeds = {str(s) for s in range(tune.seeds)}
    analysis.compared = [
        r for r in rows if r["status"] in FINISHED and r.get("tag.seed") in seeds
        and chosen.get(analysis.variant(r)) == r.get(f"tag.{tune.axis}")]
  reference = manifest.get("reference") or (analysis.variants[0] if analysis.variants else None)
  for metric in manifest.get("metrics") or ("eval_loss",):
    base = analysis.values(reference, metric)
    for variant in analysis.variants:
      analysis.summary.append(_summary_row(analysis, variant, metric, reference, base))
  return analysis


def _summary_row(analysis: Analysis, variant: str, metric: str, reference: str,
                 base: list[float]) -> dict[str, Any]:
  values = analysis.values(variant, metric)
  est = stats.estimate(values)
  row: dict[str, Any] = {"variant": variant}
  row.update({f"tag.{k}": v for k, v in (part.split("=", 1) for part in variant.split(",") if "=" in part)})
  row.update(metric=metric, n=est.n, mean=est.mean, std=est.std, ci95_low=est.ci_low,
             ci95_high=est.ci_high)
  tune = analysis.tune
  if tune is not None:
    choice = analysis.choices.get(variant)
    axis = tune.axis
    row[axis] = choice.best if choice else None
    row[f"{axis}_edge"] = choice.edge if choice and choice.complete else "grid incomplete"
    row[f"{axis}_sensitivity"] = choice.sensitivity if choice else None
    row[f"{axis}_diverged"] = sum(choice.diverged) if choice else 0
  diff = stats.welch(values, base)
  row.update(diff=diff.diff, diff_ci95_low=diff.ci_low, diff_ci95_high=diff.ci_high,
             p_value=diff.p_value)
  if not values:
    row["verdict"] = "no data"
  elif variant == reference:
    row.update(diff=None, diff_ci95_low=None, diff_ci95_high=None, p_value=None, verdict="reference")
  elif not base:
    row["verdict"] = "no reference data"
  else:
    row["verdict"] = stats.verdict(diff, lower_is_better=_lower_is_better(metric))
  return row


def _lower_is_better(metric: str) -> bool:
  """Losses, times and sizes are better small; throughputs (`..._per_s`) large."""
  return not metric.endswith("_per_s")


def grid_rows(analysis: Analysis) -> list[dict[str, Any]]:
  """A tuned sweep's curves, one row per variant and grid value: what the `lr` plot draws."""
  tune = analysis.tune
  out = []
  for variant, choice in analysis.choices.items():
    for value_, loss, diverged in zip(choice.values, choice.losses, choice.diverged):
      out.append({"variant": variant, tune.axis: value_, tune.metric: loss, "diverged": diverged,
                  "best": choice.best == value_, "init_loss": choice.init_loss})
  return out
