"""A dense FFN against mixtures of experts with the same active parameters per token, each at its
own best learning rate.

The papers: Switch Transformer (Fedus et al. 2021) and GShard (Lepikhin et al. 2020): more
experts at equal compute per token lower the loss for the same number of steps (T5-scale
models, hundreds of thousands of steps).

Ours: both MoE variants keep the dense model's active FFN weights: 4 experts of the dense
width with top-1 routing (Switch), and 8 experts of half the width with top-2
(GShard/Mixtral-style), capacity factor 1.25, in a character LM on Tiny Shakespeare; each is
tuned over a learning-rate grid and compared at its best (3 seeds) against the dense model,
on loss and on training throughput. At these sizes each expert sees a fraction of a small
corpus, far from the papers' regime.
"""

from __future__ import annotations

from experiments.sweeps.base import base, tune
from research.sweeps import Sweep, hyper

NAME = "ffn_moe"


def get_sweep(size: str) -> Sweep:
  # An even FFN width, so two half-width experts have exactly the dense FFN's active weights.
  hidden = base(size).model.ffn_hidden // 2 * 2
  config = base(size, d_ff=hidden)
  return Sweep(
      name=NAME, size=size, base=config,
      points=hyper.named("ffn", {
          "dense": {"model.moe_experts": 0},
          "moe4-top1": {"model.moe_experts": 4, "model.moe_top_k": 1},
          "moe8-top2-half": {"model.moe_experts": 8, "model.moe_top_k": 2,
                             "model.moe_d_ff": hidden // 2},
      }),
      tune=tune(size), reference="ffn=dense",
      metrics=("eval_loss", "tokens_per_s"),
      plots=("curves", "final", "tuning", "throughput"),
      description="dense FFN vs MoE at equal active parameters, each at its best lr (Fedus et al. 2021)")
