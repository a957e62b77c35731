"""Multi-head, grouped-query and multi-query attention: quality against KV-cache size and
decode speed.

Ainslie et al. (2023, "GQA") find grouped-query attention with a few K/V heads close to
multi-head quality at nearly multi-query decoding speed, while multi-query loses some
quality. (They uptrain multi-head checkpoints; here every variant trains from scratch, and
the K/V projections shrink with the K/V heads, so parameters differ slightly.)
"""

from __future__ import annotations

from experiments.sweeps.base import SEEDS, base
from research.sweeps import Measure, Sweep, hyper

NAME = "attention_heads"


def get_sweep(size: str) -> Sweep:
  config = base(size, n_heads=4 if size == "cpu" else 8)
  heads = config.model.n_heads
  return Sweep(
      name=NAME, size=size, base=config,
      points=hyper.product([
          hyper.named("heads", {f"mha{heads}": {"model.n_kv_heads": heads},
                                "gqa2": {"model.n_kv_heads": 2},
                                "mqa": {"model.n_kv_heads": 1}}),
          hyper.seeds(SEEDS[size]),
      ]),
      measures=(Measure("kv_cache_decode", {"batch": 8 if size == "cpu" else 64,
                                            "prompt_len": 16 if size == "cpu" else 128,
                                            "new_tokens": 48 if size == "cpu" else 128}),),
      plots=("curves", "final", "kv_cache"),
      description="MHA vs GQA vs MQA: loss, KV-cache bytes, cached decode speed (Ainslie et al. 2023)")
