"""Sweep axes as data: named axes over dotted config keys, combined by product and zip.

    points = hyper.product([
        hyper.sweep("model.norm_placement", ["post", "pre"]),
        hyper.named("warmup", {"none": {"optimizer.warmup_steps": 0},
                               "100": {"optimizer.warmup_steps": 100}}),
        hyper.seeds(2),
    ])
    # 8 points; points[0].name == "norm_placement=post,warmup=none,seed=0"

The combinators follow big_vision's `hyper.product` / `hyper.sweep` / `hyper.zipit`: each
returns a list of `Point`s, a point being the dotted-key overrides it applies to the base
config plus one label per named axis (the columns of the results table and the name of its
run directory). Values are typed Python values; `research.sweeps.check` applies them through
the same parser as command-line overrides, so a typo in a key or a value of the wrong type
is an error naming it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Characters a label may not contain: they would break the run directory's name.
_FORBIDDEN = set("/,=\\ \t\n")


@dataclasses.dataclass(frozen=True)
class Point:
  """One configuration of a sweep: overrides by dotted key, and a label per named axis."""

  overrides: Mapping[str, Any]
  tags: Mapping[str, str]

  @property
  def name(self) -> str:
    """`axis=label,axis=label`, in axis order: the point's run directory."""
    return ",".join(f"{axis}={label}" for axis, label in self.tags.items()) or "base"

  def merge(self, other: "Point") -> "Point":
    clash = sorted(set(self.overrides) & set(other.overrides))
    if clash:
      raise ValueError(f"two axes set the same key {clash[0]!r} ({self.name} and {other.name}); "
                       "give it to one axis only")
    axes = sorted(set(self.tags) & set(other.tags))
    if axes:
      raise ValueError(f"two axes are both named {axes[0]!r}; name them apart")
    return Point({**self.overrides, **other.overrides}, {**self.tags, **other.tags})


def label(value: Any) -> str:
  """How a value appears in a point's name: `none`, `true`, `0.001`, `a+b` for tuples."""
  if value is None:
    return "none"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (tuple, list)):
    return "+".join(label(v) for v in value)
  return str(value)


def _check_label(axis: str, text: str) -> str:
  if not text or _FORBIDDEN & set(text):
    raise ValueError(f"axis {axis!r}: label {text!r} must be non-empty and contain none of "
                     f"{''.join(sorted(_FORBIDDEN))!r} (it names a run directory)")
  return text


def sweep(key: str, values: Sequence[Any], name: str | None = None) -> list[Point]:
  """One point per value of the dotted `key`; the axis is called `name` (default: the key's
  last part, `model.norm_placement` -> `norm_placement`)."""
  axis = _check_label("sweep", name or key.rsplit(".", 1)[-1])
  if not values:
    raise ValueError(f"axis {axis!r} has no values")
  labels = [_check_label(axis, label(v)) for v in values]
  if len(set(labels)) != len(labels):
    raise ValueError(f"axis {axis!r} has repeated values {labels}")
  return [Point({key: v}, {axis: lab}) for v, lab in zip(values, labels)]


def named(axis: str, choices: Mapping[str, Mapping[str, Any]]) -> list[Point]:
  """One point per named choice, each setting several keys: `{"mqa": {"model.n_kv_heads": 1}}`."""
  _check_label("named", axis)
  if not choices:
    raise ValueError(f"axis {axis!r} has no choices")
  return [Point(dict(overrides), {axis: _check_label(axis, lab)}) for lab, overrides in choices.items()]


def fixed(overrides: Mapping[str, Any]) -> list[Point]:
  """A single unnamed point: overrides every point shares (product it with the axes)."""
  return [Point(dict(overrides), {})]


def seeds(n: int, keys: Sequence[str] = ("train.seed", "data.seed")) -> list[Point]:
  """An axis `seed` of n values setting every key in `keys` together (init and data order)."""
  if n < 1:
    raise ValueError(f"seeds(n={n}) needs n >= 1")
  return [Point({k: s for k in keys}, {"seed": str(s)}) for s in range(n)]


def product(axes: Iterable[list[Point]]) -> list[Point]:
  """Every combination of one point from each axis (the first axis varies slowest)."""
  axes = list(axes)
  out = []
  for combo in itertools.product(*axes):
    point = Point({}, {})
    for p in combo:
      point = point.merge(p)
    out.append(point)
  return out


def zipit(axes: Iterable[list[Point]]) -> list[Point]:
  """Point i of every axis together; all axes must have the same length."""
  axes = list(axes)
  lengths = {len(a) for a in axes}
  if len(lengths) > 1:
    raise ValueError(f"zipit needs axes of one length, got lengths {sorted(lengths)}")
  out = []
  for combo in zip(*axes):
    point = Point({}, {})
    for p in combo:
      point = point.merge(p)
    out.append(point)
  return out


def chain(*groups: list[Point]) -> list[Point]:
  """The points of several groups one after another (e.g. dense baselines plus an MoE grid)."""
  return [p for group in groups for p in group]
