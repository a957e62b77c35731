"""Trained parameters from a reference: a run directory, a PEFT run or adapter, a Hugging Face
directory. Every path from "where the weights are" to (model, parameters) goes through here.

    config, model, params = research.pretrained.restore("runs/default")   # newest valid step
    config, model, params = research.pretrained.restore("runs/lora")      # model: a PeftModel
    model, params = research.pretrained.restore_adapter("runs/lora/adapter")
    source = research.pretrained.load("runs/base", step=500)  # or "hf/llama" (save_pretrained)
    source.model_cfg, source.model, source.params, source.tokenizer, source.reference

Fine-tuning (`train.init_from`), a PEFT method's frozen base and a distillation teacher
(`distill.teacher`) all come through `load`. Only parameters are read (research.checkpoint's
orbax items, or research.hf.load); `reference` records where they came from, step included,
so an adapter or a fine-tuned run names exactly the base it needs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from research import checkpoint, peft, tokenizers
from research.config import roles
from research.config.model import ModelConfig
from research.layers.stack import stack_layers, unstack_layers
from research.models import registry
from research.peft import io as peft_io

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Pretrained:
  model_cfg: ModelConfig
  model: Any  # Flax module (or a research.peft.PeftModel)
  params: Any
  tokenizer: tokenizers.Tokenizer | None
  reference: dict[str, Any]  # {"path", "kind": "run" | "hf", "step"}


def is_hf_dir(path: str | pathlib.Path) -> bool:
  config = pathlib.Path(path) / "config.json"
  return config.is_file() and "model_type" in json.loads(config.read_text())


def load(path: str | pathlib.Path, step: int | None = None) -> Pretrained:
  path = pathlib.Path(path)
  if is_hf_dir(path):
    if step is not None:
      raise ValueError(f"{path} is a Hugging Face directory; it has no checkpoint steps (step={step})")
    from research import hf

    model, params = hf.load(path, param_dtype="float32")
    tokenizer = None
    try:
      tokenizer = hf.load_tokenizer(path)
    except (FileNotFoundError, ValueError) as err:
      log.warning("%s: no tokenizer to compare against (%s)", path, err)
    return Pretrained(model.cfg, model, params, tokenizer, {"path": str(path), "kind": "hf", "step": None})
  if not (path / checkpoint.CONFIG_FILE).is_file():
    raise FileNotFoundError(f"{path} is neither a run directory (config.json + checkpoints/) nor a "
                            "Hugging Face directory (config.json with a model_type)")
  steps = checkpoint.saved_steps(path)
  if step is None and steps:
    step = steps[-1]
  config, model, params = restore(path, step=step)
  tok_dir = path / "tokenizer"
  tokenizer = tokenizers.load(tok_dir) if tok_dir.is_dir() else None
  return Pretrained(config.model, model, params, tokenizer, {"path": str(path), "kind": "run", "step": step})


def restore(run_dir: str | pathlib.Path, step: int | None = None):
  """(config, model, params) of a run, without optimizer state: for notebooks and analysis.

  `step` None takes the newest valid checkpoint. A PEFT run's checkpoints hold only the
  adapter; it is joined to the base its `base.json` names (model: a PeftModel).
  """
  run_dir = pathlib.Path(run_dir)
  config = checkpoint.read_config(run_dir)
  if config.peft.enabled:
    return _restore_peft_run(run_dir, config, step)
  model = registry.build(config.model)
  return config, model, checkpoint.restore_params(run_dir, registry.param_shapes(config.model), step)


def _restore_peft_run(run_dir: pathlib.Path, config, step: int | None):
  """(config, PeftModel, full parameters) of a PEFT training run at checkpoint `step`."""
  path = run_dir / peft_io.BASE_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: the run does not say which base it adapted")
  base = json.loads(path.read_text())
  tuned = peft.build(config.peft, registry.build(config.model))
  trainable = checkpoint.restore_params(run_dir, nn.unbox(tuned.trainable_boxed()), step)
  return config, tuned.model, tuned.combine(load_base(config.model, base), trainable)


def restore_adapter(directory: str | pathlib.Path, base_params=None):
  """(PeftModel, full parameters) from an adapter directory (research.peft.save_adapter); the
  base is loaded from the reference it names unless given."""
  cfg, model_cfg, exported, base = peft_io.load_adapter(directory)
  tuned = peft.build(cfg, registry.build(model_cfg))
  if base_params is None:
    base_params = load_base(model_cfg, base)
  return tuned.model, tuned.combine(base_params, exported)


def load_base(model_cfg: ModelConfig, base: dict[str, Any]):
  """The base parameters an adapter's reference names, in `model_cfg`'s layout."""
  if base["kind"] == "random":
    return registry.init_params(model_cfg, jax.random.key(base["seed"]))
  source = load(base["path"], step=base.get("step"))
  check_compatible(model_cfg, source, "the adapter's base")
  return to_layout(source.params, source.model_cfg, model_cfg)


def _architecture(cfg: ModelConfig) -> dict[str, Any]:
  """The fields that decide the function and the parameters, with "None means derived"
  fields resolved (n_kv_heads None is n_heads, ...) and the runtime, layout and init-only
  fields (research.config.roles) left out."""
  out = {k: v for k, role, v in roles.leaves(cfg) if role not in roles.NOT_ARCHITECTURE}
  out.update(n_kv_heads=cfg.num_kv_heads, head_dim=cfg.dim_per_head, d_ff=cfg.ffn_hidden,
             final_norm=cfg.has_final_norm, scale_decoder_outputs=cfg.decoder_output_scaled,
             moe_d_ff=cfg.expert_hidden if cfg.moe_experts else None,
             deepnorm_alpha=cfg.deepnorm()[0] if cfg.norm_placement == "deepnorm" else None,
             deepnorm_beta=None, glu_param_matched=None, ffn_multiple_of=None)
  if cfg.position != "learned":
    out["max_seq_len"] = None  # sizes nothing but a learned position table
  return out


def architecture_differences(run: ModelConfig, source: ModelConfig) -> list[str]:
  """'model.field: run, source' for every architecture field in which two configs differ."""
  a, b = _architecture(run), _architecture(source)
  return [f"model.{k}: {a[k]!r} here, {b[k]!r} in the checkpoint" for k in a if a[k] != b[k]]


def check_compatible(run: ModelConfig, source: Pretrained, what: str) -> None:
  diffs = architecture_differences(run, source.model_cfg)
  if diffs:
    path = source.reference["path"]
    hint = (f"start from its config (--config {path}/config.json)" if source.reference["kind"] == "run"
            else "build the model config with research.hf.config_from_hf")
    raise ValueError(f"{what}={path} has another architecture than this run's model:\n  "
                     + "\n  ".join(diffs) + f"\nSet these model fields, or {hint}.")


def to_layout(params, source: ModelConfig, target: ModelConfig):
  """`params` of `source`'s layout in `target`'s: scanned or looped layers, param dtype."""
  if source.scan_layers and not target.scan_layers:
    params = unstack_layers(params)
  elif target.scan_layers and not source.scan_layers:
    params = stack_layers(params)
  dtype = jnp.dtype(target.param_dtype)
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
