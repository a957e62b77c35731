"""A run directory's `config.json`: written at every start, compared on resume.

Resuming with a different config would mix two experiments, so every field that changes the
function or the data must match what the run was started with; layout fields (the mesh, device
and host count, gradient accumulation, remat) and run-control fields may change. Each field's
role is declared next to it (research.config.roles). The comparison is against the copy sealed
in the newest valid checkpoint when there is one (research.checkpoint.manager), so a damaged
config.json is noticed rather than trusted.
"""

from __future__ import annotations

import json
import pathlib

from research.checkpoint.manifest import write_atomically
from research.config import roles
from research.config.experiment import ExperimentConfig

CONFIG_FILE = "config.json"


def write_config(run_dir: pathlib.Path, config) -> None:
  write_atomically(pathlib.Path(run_dir) / CONFIG_FILE,
                   json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def read_config(run_dir: str | pathlib.Path) -> ExperimentConfig:
  path = pathlib.Path(run_dir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a run directory")
  return ExperimentConfig.from_dict(json.loads(path.read_text()))


def config_differences(saved, current) -> list[str]:
  """'field: saved -> current' for every field that differs and may not change on resume:
  every field but those whose role (research.config.roles) is layout or run control."""
  diffs = roles.differences(saved, current)
  return sorted(d for role, items in diffs.items() if role not in roles.RESUMABLE for d in items)


def resumable_differences(saved, current) -> list[str]:
  """'field: saved -> current' for the layout and run-control fields that differ."""
  diffs = roles.differences(saved, current)
  return sorted(d for role in roles.RESUMABLE for d in diffs.get(role, ()))


def check_resumable(run_dir: pathlib.Path, config, saved=None) -> list[str]:
  """Raises if the run in `run_dir` (its config `saved`, default: read from config.json)
  differs from `config` in a field that defines the experiment; returns the layout and
  run-control fields that differ, as 'field: saved -> now'."""
  if saved is None:
    if not (pathlib.Path(run_dir) / CONFIG_FILE).exists():
      return []
    saved = read_config(run_dir)
  diffs = config_differences(saved, config)
  if diffs:
    raise ValueError(
        f"{run_dir} holds a run with a different config; resuming would mix two experiments. "
        "Differing fields (saved -> now):\n  " + "\n  ".join(diffs)
        + "\nUse a new --workdir, or pass the saved values. (Layout fields, mesh.* and "
        "train.grad_accum among them, and run-control fields may change.)")
  return resumable_differences(saved, config)
