"""Reading a run's checkpoints without training: the orbax items, checked against the manifest.

    params = research.checkpoint.restore_params("runs/default", abstract)   # newest valid step
    report = research.checkpoint.verify_run("runs/default")                 # every step, why

`abstract` (the parameters' shapes, e.g. research.models.registry.param_shapes) comes from
the caller: building the model for a run is research.pretrained.restore's job. Nothing here
writes: an invalid step is skipped with a warning (training quarantines it).
"""

from __future__ import annotations

import logging
import pathlib

import orbax.checkpoint as ocp

from research.checkpoint import manifest
from research.checkpoint.manager import ITEMS, nonfinite_path, saved_steps

log = logging.getLogger(__name__)


def _read_only_manager(run_dir: pathlib.Path):
  return ocp.CheckpointManager(run_dir.absolute() / "checkpoints", item_names=ITEMS,
                               options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                                    save_interval_steps=0))


def restore_params(run_dir: str | pathlib.Path, abstract, step: int | None = None):
  """The `params` item of a run's checkpoint `step` (None: the newest valid one), shaped (and,
  with shardings on `abstract`, placed) as `abstract`. A step named explicitly that fails
  verification raises with the reason."""
  run_dir = pathlib.Path(run_dir)
  steps = saved_steps(run_dir)
  if not steps:
    raise FileNotFoundError(f"no checkpoints under {run_dir / 'checkpoints'}")
  if step is not None and step not in steps:
    raise ValueError(f"step={step} is not among the saved steps {steps}")
  manager = _read_only_manager(run_dir)
  problems = []
  for s in [step] if step is not None else list(reversed(steps)):
    reason = manifest.check(run_dir / "checkpoints" / str(s))
    if reason is None:
      try:
        params = manager.restore(s, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract))).params
      except Exception as err:  # noqa: BLE001 - orbax raises many types for damaged data
        reason = f"orbax could not restore it ({type(err).__name__}: {err})"
      else:
        bad = nonfinite_path(params)
        if bad is None:
          return params
        reason = f"params{bad} holds NaN or infinite values"
    if step is not None:
      raise ValueError(f"checkpoint at step {s} of {run_dir} is invalid: {reason}")
    log.warning("checkpoint at step %d is invalid: %s; trying the previous one", s, reason)
    problems.append(f"step {s}: {reason}")
  raise RuntimeError(f"no checkpoint under {run_dir} is valid:\n  " + "\n  ".join(problems))


def verify_run(run_dir: str | pathlib.Path, values: bool = True) -> list[tuple[int, str | None]]:
  """(step, None if valid else why) for every step under `run_dir/checkpoints`, ascending.

  Checks each manifest (every file's size and sha256) and, with `values`, restores the
  parameters and the optimiser state as saved and checks that they are finite.
  """
  run_dir = pathlib.Path(run_dir)
  manager = _read_only_manager(run_dir) if values else None
  report = []
  for step in saved_steps(run_dir):
    reason = manifest.check(run_dir / "checkpoints" / str(step))
    if reason is None and values:
      try:
        out = manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(), train=ocp.args.StandardRestore()))
        bad = nonfinite_path({"params": out.params, "train": out.train})
        reason = None if bad is None else f"{bad} holds NaN or infinite values"
      except Exception as err:  # noqa: BLE001
        reason = f"orbax could not restore it ({type(err).__name__}: {err})"
    report.append((step, reason))
  return report
