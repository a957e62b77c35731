"""Multi-head, grouped-query and multi-query attention at matched parameter counts, each at its
own best learning rate: quality against KV-cache size and decode speed.

The paper: Ainslie et al. (2023, "GQA") uptrain T5-XXL multi-head checkpoints into GQA and MQA
(K/V heads mean-pooled per group, then 5% of the pre-training steps) and find grouped-query
attention with a few K/V heads close to multi-head quality at nearly multi-query decoding
speed, while multi-query loses some quality.

Ours: every variant trains from scratch, in a character LM on Tiny Shakespeare, each tuned
over a learning-rate grid and compared at its best (3 seeds) against multi-head attention.
Fewer K/V heads shrink the K/V projections; the FFN is widened to make up the difference, so
every variant has the multi-head model's parameter count (to within one FFN column per
layer). The paper's uptraining is available separately: research.gqa converts a
trained multi-head model by mean-pooling and writes a run directory to start from
(`train.init_from`).
"""

from __future__ import annotations

from experiments.sweeps.base import base, tune
from research.config.model import GATED_ACTIVATIONS, ModelConfig
from research.sweeps import Measure, Sweep, hyper

NAME = "attention_heads"


def matched_d_ff(model: ModelConfig, kv_heads: int) -> int:
  """The FFN width that gives `model` with `kv_heads` K/V heads its multi-head parameter count."""
  saved = 2 * model.d_model * (model.n_heads - kv_heads) * model.dim_per_head
  if model.qkv_bias:
    saved += 2 * (model.n_heads - kv_heads) * model.dim_per_head
  per_column = model.d_model * (3 if model.activation in GATED_ACTIVATIONS else 2)
  return model.ffn_hidden + round(saved / per_column)


def get_sweep(size: str) -> Sweep:
  config = base(size, n_heads=8 if size == "full" else 4)
  model = config.model
  heads = model.n_heads
  return Sweep(
      name=NAME, size=size, base=config,
      points=hyper.named("heads", {
          f"mha{heads}": {"model.n_kv_heads": heads, "model.d_ff": model.ffn_hidden},
          "gqa2": {"model.n_kv_heads": 2, "model.d_ff": matched_d_ff(model, 2)},
          "mqa": {"model.n_kv_heads": 1, "model.d_ff": matched_d_ff(model, 1)}}),
      tune=tune(size), reference=f"heads=mha{heads}",
      metrics=("eval_loss", "decode_tokens_per_s"),
      measures=(Measure("kv_cache_decode", {"batch": 64 if size == "full" else 8,
                                            "prompt_len": 128 if size == "full" else 16,
                                            "new_tokens": 128 if size == "full" else 48}),),
      plots=("curves", "final", "tuning", "kv_cache"),
      description="MHA vs GQA vs MQA at matched parameters, each at its best lr: loss, KV-cache "
                  "bytes, cached decode speed (Ainslie et al. 2023)")
