"""Where the LayerNorm goes (post, pre, sandwich, DeepNorm), with and without warmup.

Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") show that
Post-LN's gradients near the output are large at initialisation, so it needs a learning-rate
warmup, while Pre-LN trains without one and converges faster. The sweep trains every
placement at a learning rate 10x the base (2e-2 on CPU, 1e-2 full), where a first CPU run
found 6-layer Post-LN stuck at the unigram loss without warmup while Pre-LN trained, with no
warmup and with warmup, and with gradient clipping off (clipping hides exactly the
instability measured here).
"""

from __future__ import annotations

from experiments.sweeps.base import SEEDS, base
from research.sweeps import Sweep, hyper

NAME = "norm_placement"


def get_sweep(size: str) -> Sweep:
  config = base(size, norm="layernorm", n_layers=6 if size == "cpu" else 12)
  lr = 10 * config.optimizer.lr
  warmup = 100 if size == "cpu" else 1000
  return Sweep(
      name=NAME, size=size, base=config,
      points=hyper.product([
          hyper.sweep("model.norm_placement", ["post", "pre", "sandwich", "deepnorm"]),
          hyper.named("warmup", {"0": {"optimizer.warmup_steps": 0},
                                 str(warmup): {"optimizer.warmup_steps": warmup}}),
          hyper.fixed({"optimizer.lr": lr, "optimizer.grad_clip": 0.0}),
          hyper.seeds(SEEDS[size]),
      ]),
      plots=("curves", "final"),
      description=f"norm placement x warmup at lr {lr:g}, no gradient clipping (Xiong et al. 2020)")
