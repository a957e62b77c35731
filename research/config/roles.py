"""What each config field is to a run, declared next to the field.

    steps: int = roles.control(1000)           # may change when a run resumes
    data: int = roles.layout(-1)               # how the work is placed; may change on resume
    init_std: float = roles.init(0.02)         # shapes a fresh initialisation only
    dtype: str = roles.runtime("float32")      # how a model runs, not what function it is

A field without a role defines the experiment. The roles decide three checks alike:

- resuming a run (research.checkpoint.run_config): `experiment`, `runtime` and `init` fields
  must equal the saved run's; `layout` and `control` fields may change (a preempted job
  rescheduled on another mesh, device or host count continues the same run);
- starting from pretrained parameters (`train.init_from`, research.pretrained): model fields
  other than `runtime`, `layout` and `init` must equal the checkpoint's architecture;
- the sweep runner's "this directory holds the same point" check (research.sweeps.check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

EXPERIMENT = "experiment"  # the function, the data and their order, the optimiser, the seeds
RUNTIME = "runtime"  # how the model runs (dtypes, dropout, layer form): fixed within a run
INIT = "init"  # only shapes a fresh initialisation
LAYOUT = "layout"  # how the same computation is split over devices, hosts and microbatches
CONTROL = "control"  # steps, logging, evaluation, sampling, checkpointing

# Roles a resumed run may change, and the model roles a pretrained start may differ in.
RESUMABLE = (LAYOUT, CONTROL)
NOT_ARCHITECTURE = (RUNTIME, LAYOUT, INIT)


def _field(role: str, default: Any) -> Any:
  return dataclasses.field(default=default, metadata={"role": role})


def runtime(default: Any) -> Any:
  return _field(RUNTIME, default)


def init(default: Any) -> Any:
  return _field(INIT, default)


def layout(default: Any) -> Any:
  return _field(LAYOUT, default)


def control(default: Any) -> Any:
  return _field(CONTROL, default)


def of(cls: type, name: str) -> str:
  """The role of field `name` of dataclass `cls`."""
  return {f.name: f.metadata.get("role", EXPERIMENT) for f in dataclasses.fields(cls)}[name]


def leaves(config: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
  """(dotted key, role, value) of every non-dataclass field of a config tree. A field inside
  a nested config without a role of its own takes its parent field's role."""
  yield from _leaves(config, prefix, EXPERIMENT)


def _leaves(config: Any, prefix: str, inherited: str) -> Iterator[tuple[str, str, Any]]:
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    role = f.metadata.get("role", inherited)
    if dataclasses.is_dataclass(value):
      yield from _leaves(value, f"{prefix}{f.name}.", role)
    else:
      yield f"{prefix}{f.name}", role, value


def differences(saved: Any, current: Any) -> dict[str, list[str]]:
  """Role -> ['key: saved -> current', ...] for every field in which two configs differ."""
  a = {k: (role, v) for k, role, v in leaves(saved)}
  b = {k: (role, v) for k, role, v in leaves(current)}
  out: dict[str, list[str]] = {}
  for key in sorted(set(a) | set(b)):
    role, old = a[key] if key in a else (b[key][0], None)
    new = b[key][1] if key in b else None
    if key not in a or key not in b or old != new:
      out.setdefault(role, []).append(f"{key}: {old!r} -> {new!r}")
  return out
