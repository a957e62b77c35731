"""Multi-head attention converted to grouped-query or multi-query attention, to uptrain from.

    cfg, params = gqa.convert(model_cfg, params, n_kv_heads=2)        # in memory
    gqa.write_start("runs/mha", "runs/gqa2-start", n_kv_heads=2)      # a run directory
    python -m research.train --config runs/gqa2-start/config.json --workdir runs/gqa2-up \\
        train.init_from=runs/gqa2-start train.steps=500

Ainslie et al. (2023, "GQA", section 2.1): each new key and value head is the mean of the
heads of its group, then the model is uptrained for a few percent of its pre-training steps.
Query heads keep their grouping (research.layers.attention_backends: query head i reads K/V
head i // (n_heads / n_kv_heads)), so new K/V head j pools the old heads whose query heads it
now serves: old heads j*r ... (j+1)*r - 1, r = old K/V heads / new. A model that is already
grouped converts to fewer groups the same way. Parameters imported from Hugging Face
(research.hf) are in this layout too, so they convert alike.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from research import checkpoint, pretrained
from research.config.experiment import ExperimentConfig
from research.config.model import ModelConfig
from research.peft import core as peft_core
from research.train import optimizer as optimizer_lib
from research.train.state import TrainState

# The projections of an attention module (research.layers.attention.Attention) and the two
# whose head axis is the K/V heads'.
_ATTENTION = frozenset({"q", "k", "v", "o"})
_KV = ("k", "v")


def _pool(x_KH: jax.Array, groups: int) -> jax.Array:
  """Mean over consecutive groups of the K axis (second to last: kernels ...DKH, biases ...KH)."""
  *lead, k, h = x_KH.shape
  return x_KH.reshape(*lead, groups, k // groups, h).mean(axis=-2).astype(x_KH.dtype)


def _convert(tree: Any, groups: int) -> tuple[Any, int]:
  """`tree` with every attention module's K/V heads pooled into `groups`; how many it found."""
  if not isinstance(tree, Mapping):
    return tree, 0
  if _ATTENTION <= set(tree):
    out = dict(tree)
    for name in _KV:
      out[name] = {leaf: _pool(value, groups) for leaf, value in tree[name].items()}
    return out, 1
  out, found = {}, 0
  for key, value in tree.items():
    out[key], n = _convert(value, groups)
    found += n
  return out, found


def convert(cfg: ModelConfig, params: Any, n_kv_heads: int) -> tuple[ModelConfig, Any]:
  """(config, params) of `cfg`'s model with `n_kv_heads` K/V heads, each the mean of its group.

  `n_kv_heads` must divide the model's K/V heads (and so its query heads); 1 is multi-query.
  Every other parameter is passed through unchanged.
  """
  old = cfg.num_kv_heads
  if n_kv_heads < 1 or old % n_kv_heads:
    raise ValueError(f"n_kv_heads={n_kv_heads} must divide the model's {old} K/V heads "
                     f"(n_heads={cfg.n_heads}); choose one of: "
                     + ", ".join(str(d) for d in range(1, old + 1) if old % d == 0))
  new_cfg = cfg.replace(n_kv_heads=n_kv_heads)
  converted, found = _convert(jax.tree.map(jnp.asarray, params), n_kv_heads)
  if not found:
    raise ValueError("no attention module (q, k, v, o projections) found in the parameters")
  return new_cfg, converted


def write_start(source: str | pathlib.Path, out_dir: str | pathlib.Path, n_kv_heads: int,
                step: int | None = None) -> pathlib.Path:
  """Converts a run's (checkpoint `step`, None: the newest) or a Hugging Face directory's
  parameters and writes them as a run directory that `train.init_from` starts from:
  config.json (the source run's experiment, or the defaults around an imported model, with
  the converted model), the source run's tokenizer/, and one checkpoint at step 0."""
  source, out_dir = pathlib.Path(source), pathlib.Path(out_dir)
  loaded = pretrained.load(source, step)
  if isinstance(loaded.model, peft_core.PeftModel):
    raise ValueError(f"{source} is a peft.method run: merge its adapter into a plain model first")
  model_cfg, params = convert(loaded.model_cfg, loaded.params, n_kv_heads)
  if loaded.reference["kind"] == "run":
    config = checkpoint.read_config(source).replace(model=model_cfg)
  else:
    config = ExperimentConfig(model=model_cfg)
  config = config.replace(name=f"{config.name}:kv{n_kv_heads}")
  config = config.replace(train=dataclasses.replace(config.train, init_from=None, init_step=None))
  if (out_dir / checkpoint.CONFIG_FILE).exists():
    raise FileExistsError(f"{out_dir} already holds a run; choose a new directory")
  out_dir.mkdir(parents=True, exist_ok=True)
  checkpoint.write_config(out_dir, config)
  if (source / "tokenizer").is_dir():
    shutil.copytree(source / "tokenizer", out_dir / "tokenizer")
  optimizer, _ = optimizer_lib.build(config.optimizer, config.train.steps)
  state = TrainState.create(params, optimizer, jax.random.key(config.train.seed))
  ckpt = checkpoint.Checkpointer(out_dir, every=1, keep=1, keep_best=False, async_save=False)
  try:
    ckpt.save(0, state, {"data": None, "eval_loss": None,
                         "converted_from": {**loaded.reference, "n_kv_heads": n_kv_heads}},
              config=config.to_dict())
    ckpt.wait()
  finally:
    ckpt.close()
  return out_dir
