"""Adapters on disk: only the method's own parameters, next to a reference to the base.

    save_adapter("out/adapter", tuned, trainable, base={"path": "runs/base", "kind": "run", "step": 500})
    peft_cfg, base_model_cfg, exported, base = load_adapter("out/adapter")

research.pretrained.restore_adapter loads the base an adapter names and joins the two;
research.pretrained.restore does the same for a PEFT training run (its checkpoints).

An adapter directory holds `peft_config.json` (the PeftConfig, the base architecture, the base
reference) and `adapter.safetensors` (the exported form: prefix tuning's MLP already applied,
LLaMA-Adapter's top layers only; keys are '/'-joined parameter paths). A PEFT training run
keeps the training form in its orbax checkpoints and writes `base.json`, the reference to
its base, when it starts; the loop also writes `adapter/` when it finishes.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save_file

from research.config.model import ModelConfig
from research.config.peft import PeftConfig

CONFIG_FILE = "peft_config.json"
WEIGHTS_FILE = "adapter.safetensors"
BASE_FILE = "base.json"
FORMAT = "research.peft/1"


def save_adapter(directory: str | pathlib.Path, tuned, trainable, base: dict[str, Any]) -> pathlib.Path:
  """Writes the exported form of `trainable` and the reference `base` into `directory`."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  exported = jax.device_get(jax.jit(tuned.export)(trainable))
  tensors = {k: np.ascontiguousarray(v) for k, v in flatten_dict(exported, sep="/").items()}
  save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
  meta = {"format": FORMAT, "peft": tuned.cfg.to_dict(), "model": tuned.model.cfg.to_dict(),
          "base": base}
  (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
  return directory


def load_adapter(directory: str | pathlib.Path):
  """(PeftConfig, base ModelConfig, exported parameters, base reference) of an adapter."""
  directory = pathlib.Path(directory)
  path = directory / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{directory} holds no {CONFIG_FILE}: not an adapter directory")
  meta = json.loads(path.read_text())
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
  params = unflatten_dict(load_file(str(directory / WEIGHTS_FILE)), sep="/")
  return (PeftConfig.from_dict(meta["peft"]), ModelConfig.from_dict(meta["model"]), params,
          meta["base"])
