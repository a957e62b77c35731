"""`Sweep`: a base ExperimentConfig, the points that vary it, and what to measure and plot.

A sweep definition (experiments/sweeps/*.py) returns one of these per size; the launcher
validates every point (research.sweeps.check), runs them (research.sweeps.runner), and the
report (research.sweeps.report) turns the run directories into a table and plots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from research.config.experiment import ExperimentConfig
from research.sweeps.hyper import Point

SIZES = ("cpu", "full")


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

  def __post_init__(self):
    if self.size not in SIZES:
      raise ValueError(f"Sweep.size={self.size!r} is not allowed; choose one of: "
                       + ", ".join(repr(s) for s in SIZES))
    if not self.points:
      raise ValueError(f"sweep {self.name!r} has no points")
    object.__setattr__(self, "points", tuple(self.points))
    object.__setattr__(self, "measures", tuple(self.measures))
    object.__setattr__(self, "plots", tuple(self.plots))

  @property
  def id(self) -> str:
    return f"{self.name}/{self.size}"

  def manifest(self) -> dict[str, Any]:
    """What sweep.json records: enough for the report to work from the run directories alone."""
    return {"name": self.name, "size": self.size, "description": self.description,
            "plots": list(self.plots), "measures": [m.to_dict() for m in self.measures],
            "points": [p.name for p in self.points]}
