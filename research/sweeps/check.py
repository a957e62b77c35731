"""Every point of a sweep validated before anything runs; every problem reported at once.

For each point: its overrides are applied to the base config (unknown keys and badly typed
values are errors naming the key), the ExperimentConfig and its sections validate
themselves, the data source is known, the mesh fits this machine's devices, the model
initialises and runs its training forward at the data's shape under `jax.eval_shape`
(nothing is allocated: a full-size sweep checks on a laptop in seconds), and each
measurement accepts its arguments. A sweep with a typo in one point therefore stops before
the first point trains, listing every bad point, not halfway through.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import typing
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from research import checkpoint
from research.config import overrides as overrides_lib
from research.config.experiment import ExperimentConfig
from research.data import sources, synthetic
from research.models import registry
from research.sweeps import measures
from research.sweeps.spec import Sweep
from research.train import objectives


@dataclasses.dataclass(frozen=True)
class Problem:
  point: str
  message: str

  def __str__(self) -> str:
    return f"{self.point}: {self.message}"


class SweepError(ValueError):
  """A sweep that must not start; `problems` lists every invalid point."""

  def __init__(self, sweep: str, problems: list[Problem]):
    self.problems = problems
    super().__init__(f"sweep {sweep} has {len(problems)} problem(s); nothing was run:\n  "
                     + "\n  ".join(str(p) for p in problems))


# --------------------------------------------------------------------- applying points


def _raw(value: Any) -> str:
  """A typed value as the command-line parser reads it."""
  if value is None:
    return "none"
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (tuple, list)):
    return json.dumps(list(value))
  return str(value)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    node = tree
    *path, leaf = key.split(".")
    for part in path:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"config key {key!r}: {part!r} is set both as a value and as a section")
    node[leaf] = value
  return tree


def _replace(obj, changes: dict[str, Any], prefix: str, root):
  """`obj` with every change of this section applied in ONE dataclasses.replace, so values
  that are only valid together (n_heads with n_kv_heads) are validated together."""
  hints = typing.get_type_hints(type(obj))
  fields = {f.name for f in dataclasses.fields(obj)}
  kwargs = {}
  for name, value in changes.items():
    key = f"{prefix}{name}"
    if name not in fields:
      raise ValueError(f"unknown config key {key!r}"
                       f"{overrides_lib.close_matches(key, overrides_lib.flat_keys(root))}")
    hint = hints[name]
    if isinstance(value, dict):
      if not dataclasses.is_dataclass(hint):
        raise ValueError(f"config key {key!r} is a value, not a section")
      kwargs[name] = _replace(getattr(obj, name), value, f"{key}.", root)
    elif dataclasses.is_dataclass(hint):
      raise ValueError(f"config key {key!r} is a section; set its fields ({key}.<field>)")
    else:
      kwargs[name] = overrides_lib.parse(_raw(value), hint, key)
  return dataclasses.replace(obj, **kwargs)


def apply(base: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
  """`base` with the dotted-key `overrides` (typed values) applied and validated."""
  return _replace(base, _nest(overrides), "", base)


def point_configs(sweep: Sweep) -> dict[str, ExperimentConfig]:
  """Point name -> its validated config, for every point the sweep may run (a tuned sweep:
  every variant at every grid value and seed); raises SweepError listing every bad point."""
  problems, configs = _configs(sweep)
  if problems:
    raise SweepError(sweep.id, problems)
  return configs


def _configs(sweep: Sweep) -> tuple[list[Problem], dict[str, ExperimentConfig]]:
  problems: list[Problem] = []
  configs: dict[str, ExperimentConfig] = {}
  seen: set[str] = set()
  for point in sweep.candidates():
    if point.name in seen:
      problems.append(Problem(point.name, "two points have this name (two axes give the same "
                                          "labels); make the labels distinct"))
      continue
    seen.add(point.name)
    try:
      config = apply(sweep.base, point.overrides).replace(name=f"{sweep.name}:{point.name}")
    except ValueError as err:
      problems.append(Problem(point.name, str(err)))
      continue
    found = config_problems(config)
    for m in sweep.measures:
      found += measures.check(m.name, config, dict(m.args))
    problems += [Problem(point.name, msg) for msg in found]
    if not found:
      configs[point.name] = config
  return problems, configs


# --------------------------------------------------------------------------- checks


def config_problems(config: ExperimentConfig) -> list[str]:
  """What would stop `config` from training here, short of running it."""
  problems = []
  d = config.data
  if d.path is not None:
    if not pathlib.Path(d.path).expanduser().is_file():
      problems.append(f"data.path={d.path!r}: no such file")
  elif d.dataset not in synthetic.MIXTURES and d.dataset not in sources.SOURCES:
    problems.append(f"data.dataset={d.dataset!r} is not allowed; choose one of: "
                    + ", ".join(repr(n) for n in (*sources.SOURCES, *synthetic.NAMES)))
  try:
    config.mesh.shape(jax.device_count())
  except ValueError as err:
    problems.append(f"mesh: {err}")
  # Pipelining changes where layers run, not what they compute: check the plain stack.
  model_cfg = config.effective_model().replace(pipeline_stages=1, pipeline_microbatches=1)
  rows = d.batch_size // config.train.grad_accum
  error = _forward_error(model_cfg, rows, d.seq_len, config.train.objective)
  if error:
    problems.append(error)
  return problems


@functools.lru_cache(maxsize=256)
def _forward_error(model_cfg, rows: int, length: int, objective: str) -> str | None:
  """None if the model initialises and its training loss traces at [rows, length], else why.

  Cached per (model, shape): the seeds and optimizer settings of a sweep share one trace.
  """
  model = registry.build(model_cfg)
  loss = objectives.get(objective).loss
  batch = {"input_ids": jax.ShapeDtypeStruct((rows, length), jnp.int32),
           "targets": jax.ShapeDtypeStruct((rows, length), jnp.int32),
           "loss_mask": jax.ShapeDtypeStruct((rows, length), jnp.float32),
           "segment_ids": jax.ShapeDtypeStruct((rows, length), jnp.int32)}
  try:
    params = registry.param_shapes(model_cfg)
    jax.eval_shape(lambda p, b: loss(model, p, b, None, deterministic=True), params, batch)
  except Exception as err:  # any tracing failure is a reason the point cannot run
    text = str(err).strip().splitlines()
    return f"the model does not build or run at batch [{rows}, {length}]: {type(err).__name__}: " + (
        text[0] if text else "")
  return None


def stale_runs(sweep_dir: pathlib.Path, configs: Mapping[str, ExperimentConfig]) -> list[Problem]:
  """Points whose run directory holds a run of another config (the sweep was edited since)."""
  problems = []
  for name, config in configs.items():
    run_dir = sweep_dir / name
    if not (run_dir / checkpoint.CONFIG_FILE).exists():
      continue
    diffs = checkpoint.config_differences(checkpoint.read_config(run_dir), config)
    if diffs:
      problems.append(Problem(name, f"{run_dir} holds a run of another config ({'; '.join(diffs[:3])}"
                                    f"{'; ...' if len(diffs) > 3 else ''}); delete it or rename the sweep"))
  return problems
