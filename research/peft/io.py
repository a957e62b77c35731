"""Adapters on disk: only the method's own parameters, next to a reference to the base.

    save_adapter("out/adapter", tuned, trainable, base={"path": "runs/base", "kind": "run", "step": 500})
    model, params = restore("out/adapter")        # loads the base it names, joins the adapter
    config, model, params = restore_run("runs/lora")   # a PEFT training run (its checkpoints)

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

import flax.linen as nn
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


def load_base(model_cfg: ModelConfig, base: dict[str, Any], seed: int = 0):
  """The base parameters a reference names, in `model_cfg`'s layout."""
  from research import pretrained
  from research.models import registry

  if base["kind"] == "random":
    return registry.init_params(model_cfg, jax.random.key(base["seed"]))
  source = pretrained.load(base["path"], step=base.get("step"))
  pretrained.check_compatible(model_cfg, source, "the adapter's base")
  return pretrained.to_layout(source.params, source.model_cfg, model_cfg)


def restore(directory: str | pathlib.Path, base_params=None):
  """(PeftModel, full parameters) from an adapter directory; the base is loaded from the
  reference unless given."""
  from research import peft
  from research.models import registry

  cfg, model_cfg, exported, base = load_adapter(directory)
  tuned = peft.build(cfg, registry.build(model_cfg))
  if base_params is None:
    base_params = load_base(model_cfg, base)
  return tuned.model, tuned.combine(base_params, exported)


def restore_run(run_dir: str | pathlib.Path, config, step: int | None = None):
  """(config, PeftModel, full parameters) of a PEFT training run at checkpoint `step`."""
  from research import checkpoint, peft
  from research.models import registry

  run_dir = pathlib.Path(run_dir)
  path = run_dir / BASE_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: the run does not say which base it adapted")
  base = json.loads(path.read_text())
  tuned = peft.build(config.peft, registry.build(config.model))
  trainable = checkpoint.restore_params(run_dir, nn.unbox(tuned.trainable_boxed()), step)
  return config, tuned.model, tuned.combine(load_base(config.model, base), trainable)
