"""A dense FFN against mixtures of experts with the same active parameters per token.

Switch Transformer (Fedus et al. 2021) and GShard (Lepikhin et al. 2020): more experts at
equal compute per token lower the loss for the same number of steps. Both MoE variants here
keep the dense model's active FFN weights: 4 experts of the dense width with top-1 routing
(Switch), and 8 experts of half the width with top-2 (GShard/Mixtral-style).
"""

from __future__ import annotations

from experiments.sweeps.base import SEEDS, base
from research.sweeps import Sweep, hyper

NAME = "ffn_moe"


def get_sweep(size: str) -> Sweep:
  config = base(size)
  hidden = config.model.ffn_hidden
  return Sweep(
      name=NAME, size=size, base=config,
      points=hyper.product([
          hyper.named("ffn", {
              "dense": {"model.moe_experts": 0},
              "moe4-top1": {"model.moe_experts": 4, "model.moe_top_k": 1},
              "moe8-top2-half": {"model.moe_experts": 8, "model.moe_top_k": 2,
                                 "model.moe_d_ff": hidden // 2},
          }),
          hyper.seeds(SEEDS[size]),
      ]),
      plots=("curves", "final", "throughput"),
      description="dense FFN vs MoE at equal active parameters (Fedus et al. 2021)")
