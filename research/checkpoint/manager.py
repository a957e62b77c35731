"""Training checkpoints: orbax writes them, this module seals, verifies and prunes them.

`checkpoints/<step>/` holds four orbax items and our manifest:

  params         the model parameters (restorable alone, for analysis)
  train          the rest of the TrainState: optimizer state, step, RNG, loss-scale and skip counters
  meta           JSON: the data iterator's position, eval metrics
  config         JSON: the run's ExperimentConfig, so a damaged config.json can be told apart
  manifest.json  every file above with its size and sha256 (research/checkpoint/manifest.py)

Orbax writes a step into a temporary directory and renames it when complete; once it has, the
step is sealed with its manifest (in a background thread when saving asynchronously, so
training does not wait). A step is *valid* when its manifest verifies and its restored
parameters and optimiser state are finite. Restoring takes the newest valid step; each newer
invalid one is moved to `checkpoints.invalid/` with a warning that names the bad file, so it is
neither used, nor counted among the kept steps, nor lost. Pruning (the last `keep` plus the
best eval loss) counts only valid steps, so a damaged step never displaces a good one.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from research.checkpoint import faults, manifest
from research.checkpoint.run_config import read_config
from research.config.experiment import ExperimentConfig

log = logging.getLogger(__name__)

ITEMS = ("params", "train", "meta", "config")
INVALID_DIR = "checkpoints.invalid"
_DELETING_DIR = "checkpoints.deleting"


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions, a failed write)."""


class NoValidCheckpoint(RuntimeError):
  """A run directory holds checkpoints, and none of them verifies."""


def saved_steps(run_dir: str | pathlib.Path) -> list[int]:
  """The finished steps under a run directory, ascending (orbax names a finished step by its
  number; an unfinished one carries a temporary suffix). Valid or not: see `verify_run`."""
  root = pathlib.Path(run_dir) / "checkpoints"
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


def _abstract(tree):
  """ShapeDtypeStructs (keeping any sharding) of a tree of arrays or structs."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _state_fields(state) -> dict[str, Any]:
  return {name: getattr(state, name) for name in state.__dataclass_fields__}


@jax.jit
def _finite_flags(tree):
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return [jnp.isfinite(x).all() for x in leaves]


def nonfinite_path(tree) -> str | None:
  """The path of the first floating-point leaf of `tree` holding a NaN or an infinity, or None."""
  flags = jax.device_get(_finite_flags(tree))
  if all(bool(f) for f in flags):
    return None
  paths = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(tree)
           if jnp.issubdtype(x.dtype, jnp.inexact)]
  return next(p for p, ok in zip(paths, flags) if not ok)


class Checkpointer:
  """Saves every `every` steps, keeping the last `keep` valid steps plus the best eval loss."""

  def __init__(self, run_dir: str | pathlib.Path, *, every: int, keep: int, keep_best: bool,
               async_save: bool = True):
    self.run_dir = pathlib.Path(run_dir).absolute()
    self.root = self.run_dir / "checkpoints"
    self.every, self.keep, self.keep_best = every, keep, keep_best
    self.primary = jax.process_index() == 0
    self._async = async_save
    # Orbax keeps every step (its default policy with no max_to_keep): pruning is ours, so it
    # can count valid steps only. Leftover temporary directories of a killed save are removed.
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=self._written)
        if async_save else None)
    self.manager = ocp.CheckpointManager(self.root, options=options, item_names=ITEMS)
    self._manifests: dict[int, dict] = {}  # verified (or sealed here) steps
    self._stamps: dict[int, dict] = {}  # their files' (size, mtime) when verified
    self._writing: int | None = None
    self._saved: set[int] = set()  # written by this process (every process knows these)
    self._sealer: threading.Thread | None = None
    self._failure: BaseException | None = None

  # ------------------------------------------------------------------------------- saving

  def should_save(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state, meta: dict[str, Any], eval_loss: float | None = None,
           config: dict | None = None):
    """Starts writing `step`; returns before the write ends when saving asynchronously.

    A write that fails (this one, or the previous asynchronous one) raises
    CheckpointWriteError; the steps written before it are untouched.
    """
    self._join()
    if step in self._saved:
      return  # already saved by this run (a Ctrl-C right after a scheduled save)
    faults.hit("save_start", step)
    train = {k: v for k, v in _state_fields(state).items() if k != "params"}
    metrics = None if eval_loss is None else {"eval_loss": float(eval_loss)}
    self._writing = step
    try:
      self.manager.save(step, force=True, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          train=ocp.args.StandardSave(train),
          meta=ocp.args.JsonSave(meta),
          config=ocp.args.JsonSave(config or {})))
    except Exception as err:  # noqa: BLE001 - whatever the storage layer raised
      self._failed(step, err)
    if self._async:
      self._sealer = threading.Thread(target=self._complete_in_background, args=(step, metrics),
                                      name=f"seal-checkpoint-{step}", daemon=True)
      self._sealer.start()
    else:
      self._complete(step, metrics)

  def _written(self):
    """Orbax's post-finalisation callback: every file of the step is written, not yet renamed."""
    faults.hit("before_rename", self._writing)

  def _complete_in_background(self, step: int, metrics):
    try:
      self._complete(step, metrics)
    except BaseException as err:  # noqa: BLE001 - re-raised in the training thread by _join
      self._failure = err

  def _complete(self, step: int, metrics):
    try:
      self.manager.wait_until_finished()
    except Exception as err:  # noqa: BLE001
      self._failed(step, err)
    step_dir = self.root / str(step)
    if not step_dir.is_dir():  # orbax logs a failed finalisation and leaves the temporary dir
      self._failed(step, None)
    faults.hit("after_rename", step)
    self._saved.add(step)
    if self.primary:
      try:
        self._manifests[step] = manifest.seal(step_dir, step, metrics)
        self._stamps[step] = self._stamp(step)
      except OSError as err:
        self._failed(step, err)
      faults.hit("after_seal", step)
      self._prune()

  def _failed(self, step: int, err: BaseException | None):
    """Removes what a failed save left and raises CheckpointWriteError."""
    if self.primary:
      for partial in self.root.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(partial, ignore_errors=True)
      unsealed = self.root / str(step)
      if unsealed.is_dir() and not (unsealed / manifest.MANIFEST).is_file():
        shutil.rmtree(unsealed, ignore_errors=True)
    valid = [s for s in saved_steps(self.run_dir) if s in self._manifests]
    cause = f"{type(err).__name__}: {err}" if err is not None else "orbax could not finish it (see the log above)"
    raise CheckpointWriteError(
        f"the checkpoint of step {step} could not be written ({cause}). The steps already saved "
        f"are intact{f' (newest valid: {valid[-1]})' if valid else ''}; free space or fix the "
        f"storage under {self.root}, then re-run the same command to resume.") from err

  def _join(self):
    if self._sealer is not None:
      self._sealer.join()
      self._sealer = None
    if self._failure is not None:
      failure, self._failure = self._failure, None
      raise failure

  def wait(self):
    """Blocks until the last save is written and sealed; raises if it failed."""
    self._join()

  def close(self):
    try:
      self._join()
    finally:
      self.manager.close()

  # ------------------------------------------------------------------------------ pruning

  def _stamp(self, step: int) -> dict[str, tuple[int, int]]:
    files = self._manifests[step]["files"]
    out = {}
    for name in files:
      try:
        st = (self.root / str(step) / name).stat()
        out[name] = (st.st_size, st.st_mtime_ns)
      except OSError:
        out[name] = (-1, -1)
    return out

  def _is_valid(self, step: int) -> bool:
    """Verified once in full; after that, re-verified in full only if a file's size or
    modification time changed since (a same-size in-place rewrite also changes the time)."""
    if step in self._manifests and self._stamps.get(step) == self._stamp(step):
      return True
    if manifest.check(self.root / str(step)) is None:
      self._manifests[step] = manifest.read_or_legacy(self.root / str(step))
      self._stamps[step] = self._stamp(step)
      return True
    self._manifests.pop(step, None)
    return False

  def _prune(self):
    """Deletes valid steps beyond the last `keep` and the best; never an invalid step."""
    valid = [s for s in saved_steps(self.run_dir) if self._is_valid(s)]
    kept = set(valid[-self.keep:]) if self.keep > 0 else set(valid)
    if self.keep_best:
      scored = [(self._manifests[s]["metrics"]["eval_loss"], s) for s in valid
                if "eval_loss" in self._manifests[s].get("metrics", {})]
      if scored:
        kept.add(min(scored)[1])
    for step in valid:
      if step not in kept:
        self._remove(step, self.run_dir / _DELETING_DIR)

  def _remove(self, step: int, into: pathlib.Path, reason: str | None = None) -> pathlib.Path:
    """Moves step out of `checkpoints/` in one rename (so a crash never leaves half of it
    there); deletes it unless it is being quarantined with a reason."""
    into.mkdir(parents=True, exist_ok=True)
    target, n = into / str(step), 1
    while target.exists():
      n += 1
      target = into / f"{step}-{n}"
    (self.root / str(step)).rename(target)
    self._manifests.pop(step, None)
    if reason is None:
      shutil.rmtree(target, ignore_errors=True)
    else:
      (target / "INVALID.txt").write_text(reason + "\n")
    return target

  def steps(self) -> list[int]:
    return saved_steps(self.run_dir)

  # ---------------------------------------------------------------------------- restoring

  def _quarantine(self, step: int, reason: str):
    log.warning("checkpoint at step %d is invalid: %s", step, reason)
    if self.primary:
      target = self._remove(step, self.run_dir / INVALID_DIR, reason)
      log.warning("moved it to %s (kept for inspection, never restored or pruned)", target)

  def _newest_verified(self) -> int | None:
    """The newest step whose manifest verifies; newer steps are quarantined on the way."""
    chosen = None
    if self.primary:
      for step in reversed(saved_steps(self.run_dir)):
        reason = manifest.check(self.root / str(step)) if step not in self._manifests else None
        if reason is None:
          if step not in self._manifests:
            self._manifests[step] = manifest.read_or_legacy(self.root / str(step))
            self._stamps[step] = self._stamp(step)
          chosen = step
          break
        self._quarantine(step, reason)
    if jax.process_count() > 1:  # the primary decides; every process restores the same step
      chosen = int(multihost_utils.broadcast_one_to_all(np.int64(-1 if not self.primary or chosen is None else chosen)))
      chosen = None if chosen < 0 else chosen
    self.manager.reload()
    return chosen

  def run_config(self, config_file: pathlib.Path):
    """The run's ExperimentConfig: the copy sealed in the newest valid checkpoint if there is
    one (config.json is then only checked against it), else config.json, else None."""
    step = self._newest_verified()
    root_config, problem = None, None
    if config_file.exists():
      try:
        root_config = read_config(config_file.parent)
      except (ValueError, TypeError, KeyError) as err:
        problem = f"{config_file} is unreadable ({type(err).__name__}: {err})"
    if step is None:
      if problem:
        raise ValueError(problem + "; there is no checkpoint to recover it from. Use a new --workdir.")
      return root_config
    if manifest.legacy(self.root / str(step)):  # no sealed copy: config.json as before
      if problem:
        raise ValueError(problem + f"; checkpoint {step} predates sealed config copies. Use a new --workdir.")
      return root_config
    sealed = json.loads((self.root / str(step) / "config" / "metadata").read_text())
    sealed = ExperimentConfig.from_dict(sealed)
    if problem:
      log.warning("%s; using the copy sealed in checkpoint %d, and rewriting it", problem, step)
    return sealed

  def _none_valid_message(self) -> str:
    return (f"no checkpoint under {self.root} is valid (each invalid one was moved to "
            f"{self.run_dir / INVALID_DIR} with the reason in INVALID.txt; the warnings above "
            "name the damaged files). Nothing was deleted. To start this run afresh, move the "
            "run directory away or use a new --workdir.")

  def restore_latest(self, abstract_state):
    """(state, meta) from the newest valid checkpoint, or None if the run has none to lose.

    `abstract_state` is a TrainState of ShapeDtypeStructs (with shardings, to restore sharded).
    An invalid step (manifest mismatch, a restore error, non-finite values) is quarantined with
    a warning and the previous one tried; if a sealed step went bad and no valid one is left,
    raises NoValidCheckpoint rather than start the run afresh over it.
    """
    while (step := self._newest_verified()) is not None:
      try:
        state, meta = self._restore(step, abstract_state)
      except Exception as err:  # noqa: BLE001 - orbax raises many types for damaged data
        reason = f"orbax could not restore it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
      else:
        bad = nonfinite_path({"params": state.params, "opt_state": state.opt_state})
        if bad is None:
          return state, meta
        reason = f"{bad} holds NaN or infinite values"
      self._manifests.pop(step, None)
      self._quarantine(step, reason)
    # Steps that were never sealed (a save cut short) held nothing to lose; a sealed step that
    # went bad did, so the run refuses to start afresh over it, now or on a later attempt.
    quarantined = self.run_dir / INVALID_DIR
    if quarantined.is_dir() and any((p / manifest.MANIFEST).exists() for p in quarantined.iterdir()):
      raise NoValidCheckpoint(self._none_valid_message())
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
