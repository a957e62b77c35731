"""`Sweep`: a base ExperimentConfig, the points that vary it, and what to measure and plot.

A sweep definition (experiments/sweeps/*.py) returns one of these per size; the launcher
validates every point (research.sweeps.check), runs them (research.sweeps.runner), and the
report (research.sweeps.report) turns the run directories into tables and plots.

A plain sweep's points carry their own seed axis (`hyper.seeds`). A tuned sweep (`tune`, a
research.sweeps.tuning.Tune) declares only its variants as points: the learning-rate grid and
the seeds are the tuning's, and the runner expands them in two phases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from research.config.experiment import ExperimentConfig
from research.sweeps import tuning
from research.sweeps.hyper import Point

# quick: minutes, for notebooks and tests. cpu: runs near convergence on a 2-core CPU, a sweep
# in at most about 2 hours. full: an accelerator.
SIZES = ("quick", "cpu", "full")


@dataclasses.dataclass(frozen=True)
class Measure:
  """A measurement taken after a point has trained: `name` in research.sweeps.measures.MEASURES,
  called with the run's config and directory and these keyword arguments."""

  name: str
  args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict[str, Any]:
    return {"name": self.name, "args": dict(self.args)}


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  size: str
  base: ExperimentConfig
  points: tuple[Point, ...]
  measures: tuple[Measure, ...] = ()
  # Plots research.sweeps.plots draws for the report, by name (see plots.PLOTS).
  plots: tuple[str, ...] = ("curves", "final")
  # What the sweep asks, in a sentence (shown by the launcher and written to sweep.json).
  description: str = ""
  # Tuned per variant (points are then the variants, without the tuned key or seeds).
  tune: tuning.Tune | None = None
  # The variant every other is compared with (a name of `variants()`); None: the first.
  reference: str | None = None
  # Results columns the summary compares (mean, interval, verdict against the reference).
  metrics: tuple[str, ...] = ("eval_loss",)

  def __post_init__(self):
    if self.size not in SIZES:
      raise ValueError(f"Sweep.size={self.size!r} is not allowed; choose one of: "
                       + ", ".join(repr(s) for s in SIZES))
    if not self.points:
      raise ValueError(f"sweep {self.name!r} has no points")
    for name in ("points", "measures", "plots", "metrics"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.tune is not None:
      for p in self.points:
        clash = ({"seed", self.tune.axis} & set(p.tags)) or ({self.tune.key} & set(p.overrides))
        if clash:
          raise ValueError(f"sweep {self.name!r} is tuned on {self.tune.key}: its points are the "
                           f"variants, but {p.name} sets {sorted(clash)[0]!r}; the grid and the "
                           "seeds come from Sweep.tune (or pass tune=None for a plain sweep)")
    if self.reference is not None and self.reference not in self.variants():
      raise ValueError(f"Sweep.reference={self.reference!r} is not a variant of {self.name!r}; "
                       "choose one of: " + ", ".join(repr(v) for v in self.variants()))

  @property
  def id(self) -> str:
    return f"{self.name}/{self.size}"

  def variants(self) -> list[str]:
    """The configurations compared: point names without the seed (and the tuned axis)."""
    out: list[str] = []
    for p in self.points:
      name = tuning.variant_name(p.tags, ("seed",))
      if name not in out:
        out.append(name)
    return out

  def candidates(self) -> tuple[Point, ...]:
    """Every point the sweep may run: a tuned sweep's grid at every seed it may need."""
    if self.tune is None:
      return self.points
    return tuple(tuning.candidate_points(self.points, self.tune))

  def manifest(self) -> dict[str, Any]:
    """What sweep.json records: enough for the report to work from the run directories alone."""
    return {"name": self.name, "size": self.size, "description": self.description,
            "plots": list(self.plots), "measures": [m.to_dict() for m in self.measures],
            "points": [p.name for p in self.candidates()], "variants": self.variants(),
            "reference": self.reference or self.variants()[0], "metrics": list(self.metrics),
            "tune": self.tune.to_dict() if self.tune else None}
