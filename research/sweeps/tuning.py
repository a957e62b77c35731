"""A learning rate tuned per variant, so every variant is compared at its own best.

    tune = Tune(values=log_grid(3e-4, 1e-2))         # 3e-4, 1e-3, 3e-3, 1e-2 on optimizer.lr
    Sweep(..., points=variants, tune=tune)            # variants: no lr, no seed axis

A tuned sweep runs in two phases (research.sweeps.runner): the grid, every variant at every
value with `grid_seeds` seeds, then `seeds` seeds of each variant at the value where its
grid loss was lowest (the grid's seed 0 is one of them: same point, same run directory).
Both phases are points of one sweep directory, so a killed sweep resumes where it stopped.

Following Wortsman et al. (2023, "Small-scale proxies for large-scale Transformer training
instabilities", section 2), a run's loss on the curve is min(loss, L0) with L0 the loss at
initialisation, and a run that diverged or ended non-finite counts as L0: a result, not a
gap. L0 is ln(vocab_size), the loss of the uniform prediction a freshly initialised model
makes. LR sensitivity is the mean over the grid of min(loss(lr), L0) minus the best loss: 0
for a variant indifferent to the learning rate, up to L0 - best for one that trains at a
single value only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from research.sweeps import hyper
from research.sweeps.hyper import Point

FINISHED = ("done", "diverged")
# Consecutive grid values must be this far apart (ratio), so 4 values span over a decade.
RATIO_RANGE = (2.0, 4.0)


@dataclasses.dataclass(frozen=True)
class Tune:
  """The tuned axis: `key` over the log-spaced `values`, `grid_seeds` seeds per grid point,
  then `seeds` seeds at each variant's best value by `metric`."""

  values: tuple[float, ...]
  key: str = "optimizer.lr"
  axis: str = "lr"
  seeds: int = 3
  grid_seeds: int = 1
  metric: str = "eval_loss"

  def __post_init__(self):
    values = tuple(float(v) for v in self.values)
    object.__setattr__(self, "values", values)
    if len(values) < 4:
      raise ValueError(f"Tune.values={values} needs at least 4 values (a grid that can show a "
                       "minimum inside it)")
    if any(v <= 0 for v in values):
      raise ValueError(f"Tune.values={values} must be > 0 (a log-spaced grid)")
    lo, hi = RATIO_RANGE
    for a, b in zip(values, values[1:]):
      if not lo <= b / a <= hi:
        raise ValueError(f"Tune.values={values}: consecutive values {a:g}, {b:g} are {b / a:.2f}x "
                         f"apart; keep them increasing, {lo:g}x to {hi:g}x apart (log_grid makes 1-3-10)")
    if self.seeds < 1 or self.grid_seeds < 1:
      raise ValueError(f"Tune.seeds={self.seeds}, grid_seeds={self.grid_seeds} must be >= 1")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self) | {"values": list(self.values)}


def log_grid(low: float, high: float) -> tuple[float, ...]:
  """The 1-3-10 values from `low` to `high`: log_grid(3e-4, 1e-2) = (3e-4, 1e-3, 3e-3, 1e-2)."""
  out, exponent = [], math.floor(math.log10(low)) - 1
  while True:
    for mantissa in (1, 3):
      value = float(f"{mantissa}e{exponent}")
      if value > high * (1 + 1e-9):
        return tuple(out)
      if value >= low * (1 - 1e-9):
        out.append(value)
    exponent += 1


# ------------------------------------------------------------------------------ points


def variant_name(tags: Mapping[str, str], exclude: Iterable[str]) -> str:
  """The variant a point or row belongs to: its axis labels other than `exclude`."""
  exclude = set(exclude)
  return ",".join(f"{k}={v}" for k, v in tags.items() if k not in exclude) or "base"


def _values_axis(tune: Tune, values: Sequence[float]) -> list[Point]:
  return hyper.sweep(tune.key, list(values), name=tune.axis)


def grid_points(variants: Sequence[Point], tune: Tune) -> list[Point]:
  """Phase one: every variant at every value, `grid_seeds` seeds."""
  return hyper.product([list(variants), _values_axis(tune, tune.values), hyper.seeds(tune.grid_seeds)])


def candidate_points(variants: Sequence[Point], tune: Tune) -> list[Point]:
  """Every point the sweep may run, whichever values win: validated before anything runs."""
  n = max(tune.seeds, tune.grid_seeds)
  return hyper.product([list(variants), _values_axis(tune, tune.values), hyper.seeds(n)])


def final_points(variants: Sequence[Point], tune: Tune, best: Mapping[str, float | None]) -> list[Point]:
  """Phase two: `seeds` seeds of each variant at its best value (variants without one: none)."""
  out = []
  for v in variants:
    if best.get(v.name) is not None:
      out += hyper.product([[v], _values_axis(tune, [best[v.name]]), hyper.seeds(tune.seeds)])
  return out


# ---------------------------------------------------------------------- choosing a value


def init_loss(vocab_size: int) -> float:
  """The loss of a uniform prediction over the vocabulary: a fresh model's, and a diverged run's."""
  return math.log(vocab_size)


def curve_loss(status: str, value: float | None, l0: float) -> float | None:
  """A finished run's point on the loss-vs-value curve: min(value, L0), L0 when it diverged
  or ended non-finite; None for a run that has no result (pending, failed)."""
  if status not in FINISHED:
    return None
  if status == "diverged" or value is None or not math.isfinite(value):
    return l0
  return min(float(value), l0)


def sensitivity(losses: Sequence[float], l0: float) -> float:
  """Wortsman et al. (2023): mean over the grid of min(loss, L0) minus the best loss."""
  capped = [min(x, l0) for x in losses]
  return sum(capped) / len(capped) - min(capped)


@dataclasses.dataclass(frozen=True)
class Choice:
  """One variant's grid: the curve (None where a grid point has no result yet) and, once
  every grid point has finished, the best value, whether it lies on an edge, and the
  sensitivity."""

  variant: str
  values: tuple[float, ...]
  losses: tuple[float | None, ...]
  diverged: tuple[bool, ...]
  init_loss: float
  best: float | None = None
  best_loss: float | None = None
  edge: str = ""  # "low" or "high" when the best is the grid's lowest or highest value
  sensitivity: float | None = None

  @property
  def complete(self) -> bool:
    return self.best is not None


def choose(variant: str, values: Sequence[float], losses: Sequence[float | None],
           diverged: Sequence[bool], l0: float) -> Choice:
  """The lowest loss of a complete grid (ties: the lower value); incomplete grids choose nothing."""
  values, losses, diverged = tuple(values), tuple(losses), tuple(diverged)
  partial = Choice(variant, values, losses, diverged, l0)
  if not values or any(x is None for x in losses):
    return partial
  i = min(range(len(values)), key=lambda j: (losses[j], j))
  edge = "low" if i == 0 else "high" if i == len(values) - 1 else ""
  return dataclasses.replace(partial, best=values[i], best_loss=losses[i], edge=edge,
                             sensitivity=sensitivity(losses, l0))


def choices(rows: Sequence[Mapping[str, Any]], variants: Sequence[str], tune: Tune) -> dict[str, Choice]:
  """Variant -> its Choice, from the results rows (research.sweeps.results.row) of the grid:
  the curve at each value is the mean over the grid seeds of each run's curve_loss."""
  grid_seeds = {str(s) for s in range(tune.grid_seeds)}
  by_point: dict[tuple[str, float], list[tuple[float | None, bool]]] = {}
  l0s: dict[str, float] = {}
  for r in rows:
    tags = {k[4:]: v for k, v in r.items() if k.startswith("tag.")}
    if tags.get("seed") not in grid_seeds or tune.key not in r:
      continue
    variant = variant_name(tags, ("seed", tune.axis))
    l0 = r["init_loss"]
    l0s[variant] = l0
    loss = curve_loss(r["status"], r.get(tune.metric), l0)
    by_point.setdefault((variant, float(r[tune.key])), []).append((loss, r["status"] == "diverged"))
  out = {}
  for variant in variants:
    losses, diverged = [], []
    for value in tune.values:
      runs = by_point.get((variant, value), [])
      done = [x for x, _ in runs if x is not None]
      losses.append(sum(done) / len(done) if runs and len(done) == len(runs) == tune.grid_seeds else None)
      diverged.append(any(d for _, d in runs))
    out[variant] = choose(variant, tune.values, losses, diverged, l0s.get(variant, math.nan))
  return out
