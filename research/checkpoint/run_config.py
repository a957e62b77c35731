"""A run directory's `config.json`: written at every start, compared on resume.

Resuming with a different config would mix two experiments, so every field that changes the
function or the data must match what the run was started with; run-control fields
(RESUMABLE_CHANGES) may change. The comparison is against the copy sealed in the newest valid
checkpoint when there is one (research.checkpoint.manager), so a damaged config.json is noticed
rather than trusted.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from research.checkpoint.manifest import write_atomically

CONFIG_FILE = "config.json"
# Fields a resumed run may change without invalidating its checkpoints.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                     "train.sample_every", "train.sample_prompt", "train.sample_tokens",
                     "train.sample_temperature", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.keep_best", "train.async_checkpoint", "train.progress",
                     "train.tensorboard", "train.max_nonfinite", "name",
                     # What the backward pass recomputes: the same function, the same params.
                     "model.remat")


def write_config(run_dir: pathlib.Path, config) -> None:
  write_atomically(pathlib.Path(run_dir) / CONFIG_FILE,
                   json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


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


def check_resumable(run_dir: pathlib.Path, config, saved=None) -> None:
  """Raises if the run in `run_dir` (its config `saved`, default: read from config.json)
  differs from `config` in a binding field."""
  if saved is None:
    if not (pathlib.Path(run_dir) / CONFIG_FILE).exists():
      return
    saved = read_config(run_dir)
  diffs = config_differences(saved, config)
  if diffs:
    raise ValueError(
        f"{run_dir} holds a run with a different config; resuming would mix two experiments. "
        "Differing fields (saved -> now):\n  " + "\n  ".join(diffs)
        + "\nUse a new --workdir, or pass the saved values.")
