"""Run directories and orbax checkpoints.

A run directory holds `config.json` (the full ExperimentConfig), `tokenizer/`, `metrics.jsonl`,
TensorBoard events and `checkpoints/<step>/` with three orbax items:

  params  the model parameters (restorable alone, for analysis)
  train   the rest of the TrainState: optimizer state, step, RNG, loss-scale and skip counters
  meta    JSON: data-iterator position, eval metrics, wall time

Orbax writes each step to a temporary directory and renames it when complete, so a crash
never leaves a half-written checkpoint that looks finished. A finished checkpoint that is
later truncated or corrupted fails to restore; `Checkpointer.restore_latest` then falls back
to the previous step with a warning.

    config, model, params = research.checkpoint.restore("runs/default")
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# Fields a resumed run may change without invalidating its checkpoints.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                     "train.sample_every", "train.sample_prompt", "train.sample_tokens",
                     "train.sample_temperature", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.keep_best", "train.async_checkpoint", "train.progress",
                     "train.tensorboard", "train.max_nonfinite", "name",
                     # What the backward pass recomputes: the same function, the same params.
                     "model.remat")


def _abstract(tree):
  """ShapeDtypeStructs (keeping any sharding) of a tree of arrays or structs."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves every `every` steps, keeping the last `keep` plus the best eval loss."""

  def __init__(self, run_dir: str | pathlib.Path, *, every: int, keep: int, keep_best: bool,
               async_save: bool = True):
    policies = [checkpoint_managers.LatestN(n=keep)]
    if keep_best:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda m: -m["eval_loss"], n=1, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, create=True)
    self.every = every
    self.manager = ocp.CheckpointManager(
        pathlib.Path(run_dir).absolute() / "checkpoints", options=options,
        item_names=("params", "train", "meta"))

  def should_save(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state, meta: dict[str, Any], eval_loss: float | None = None):
    train = {k: v for k, v in _state_fields(state).items() if k != "params"}
    self.manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave(train),
            meta=ocp.args.JsonSave(meta)),
        metrics=None if eval_loss is None else {"eval_loss": float(eval_loss)},
        force=True)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state):
    """(state, meta) from the newest checkpoint that restores, or None if there is none.

    `abstract_state` is a TrainState of ShapeDtypeStructs (with shardings, to restore
    sharded). Checkpoints that fail to restore are skipped with a warning.
    """
    for step in reversed(self.steps()):
      try:
        return self._restore(step, abstract_state)
      except Exception as err:  # orbax raises many types for corrupted data
        log.warning("checkpoint at step %d failed to restore (%s: %s); trying the previous one",
                    step, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    return None

  def _restore(self, step: int, abstract_state):
    fields = _state_fields(abstract_state)
    train_abstract = {k: v for k, v in fields.items() if k != "params"}
    out = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(abstract_state.params)),
        train=ocp.args.StandardRestore(_abstract(train_abstract)),
        meta=ocp.args.JsonRestore()))
    state = abstract_state.replace(params=out.params, **out.train)
    return state, out.meta

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def _state_fields(state) -> dict[str, Any]:
  return {name: getattr(state, name) for name in state.__dataclass_fields__}


# ------------------------------------------------------------------------------- configs


def write_config(run_dir: pathlib.Path, config) -> None:
  path = pathlib.Path(run_dir) / CONFIG_FILE
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
  tmp.replace(path)


def read_config(run_dir: str | pathlib.Path):
  from research.config.experiment import ExperimentConfig

  path = pathlib.Path(run_dir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a run directory")
  return ExperimentConfig.from_dict(json.loads(path.read_text()))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_differences(saved, current) -> list[str]:
  """'field: saved -> current' for every field that differs and may not change on resume."""
  a, b = _flatten(saved.to_dict()), _flatten(current.to_dict())
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]


def check_resumable(run_dir: pathlib.Path, config) -> None:
  """Raises if `run_dir` holds a run whose config differs from `config` in a binding field."""
  if not (pathlib.Path(run_dir) / CONFIG_FILE).exists():
    return
  diffs = config_differences(read_config(run_dir), config)
  if diffs:
    raise ValueError(
        f"{run_dir} holds a run with a different config; resuming would mix two experiments. "
        "Differing fields (saved -> now):\n  " + "\n  ".join(diffs)
        + "\nUse a new --workdir, or pass the saved values.")


# ------------------------------------------------------------------------------ analysis


def _read_only_manager(run_dir: pathlib.Path):
  return ocp.CheckpointManager(run_dir.absolute() / "checkpoints", item_names=("params", "train", "meta"),
                               options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                                    save_interval_steps=0))


def saved_steps(run_dir: str | pathlib.Path) -> list[int]:
  """The steps checkpointed under a run directory, ascending (orbax names finished steps by
  number; unfinished ones carry a temporary suffix)."""
  root = pathlib.Path(run_dir) / "checkpoints"
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


def restore(run_dir: str | pathlib.Path, step: int | None = None):
  """(config, model, params) of a run, without optimizer state: for notebooks and analysis.

  `step` None takes the newest checkpoint that restores. A PEFT run's checkpoints hold only
  the adapter; research.peft.restore_run joins it to the base it names (model: a PeftModel).
  """
  from research.models import registry

  run_dir = pathlib.Path(run_dir)
  config = read_config(run_dir)
  if config.peft.enabled:
    from research.peft import io as peft_io

    return peft_io.restore_run(run_dir, config, step)
  model = registry.build(config.model)
  return config, model, restore_params(run_dir, registry.param_shapes(config.model), step)


def restore_params(run_dir: str | pathlib.Path, abstract, step: int | None = None):
  """The `params` item of a run's checkpoint `step` (None: the newest that restores), shaped
  (and, with shardings on `abstract`, placed) as `abstract`."""
  run_dir = pathlib.Path(run_dir)
  manager = _read_only_manager(run_dir)
  steps = sorted(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f"no checkpoints under {run_dir / 'checkpoints'}")
  if step is not None and step not in steps:
    raise ValueError(f"step={step} is not among the saved steps {steps}")
  candidates = [step] if step is not None else list(reversed(steps))
  for s in candidates:
    try:
      out = manager.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
      return out.params
    except Exception as err:
      if step is not None:
        raise
      log.warning("checkpoint at step %d failed to restore (%s); trying the previous one", s, err)
  raise RuntimeError(f"no checkpoint under {run_dir} could be restored")
