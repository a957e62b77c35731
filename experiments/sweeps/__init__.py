"""The ready sweeps, by name: `get(name, size)` returns a research.sweeps.Sweep.

Each module declares one sweep as data (a base config and the axes that vary it) at the
sizes in research.sweeps.SIZES; `python -m experiments.sweep NAME` runs it.
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.sweeps import activation, attention_heads, ffn_moe, norm_placement, position
from research.config.validate import close_matches
from research.sweeps import Sweep

SWEEPS: dict[str, Callable[[str], Sweep]] = {
    m.NAME: m.get_sweep for m in (norm_placement, activation, position, attention_heads, ffn_moe)
}


def names() -> list[str]:
  return list(SWEEPS)


def get(name: str, size: str = "cpu") -> Sweep:
  if name not in SWEEPS:
    raise ValueError(f"unknown sweep {name!r}{close_matches(name, SWEEPS)}; known: {', '.join(SWEEPS)}")
  return SWEEPS[name](size)


def describe() -> list[str]:
  return [f"{name}: {get(name).description}" for name in SWEEPS]
