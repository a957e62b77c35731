"""Where the LayerNorm goes (post, pre, sandwich, DeepNorm), with and without warmup, each at its
own best learning rate.

The paper: Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") show
that Post-LN's gradients near the output are large at initialisation, so it needs a
learning-rate warmup, while Pre-LN trains without one; their experiments are 6-layer
Transformers on translation and 12-layer BERT, with Adam at learning rates up to 1e-3 (Post-LN)
and warmup of 4000 steps (about 4-5% of their BERT run), gradient clipping not relied on.
Wortsman et al. (2023) make the same point with loss-vs-learning-rate curves: an intervention
that stabilises training shows as a flatter curve, lower LR sensitivity.

Ours: every placement x warmup {0, 5% of the steps} is trained over a learning-rate grid
(research.sweeps.tuning) and compared at its own best, with gradient clipping off (clipping
hides exactly the instability measured here) and LayerNorm as in the paper. The grid runs to
30x the base rate so the unstable side of each curve is in view. Models are decoder-only
character LMs on Tiny Shakespeare, far smaller than the paper's (quick: 6 layers x 64; cpu:
4 layers x 128; full: 12 layers x 384), and DeepNorm (Wang et al. 2022) is added as the
later fix for Post-LN.
"""

from __future__ import annotations

from experiments.sweeps.base import base, tune
from research.sweeps import Sweep, hyper, log_grid

NAME = "norm_placement"
LAYERS = {"quick": 6, "cpu": 4, "full": 12}


def get_sweep(size: str) -> Sweep:
  config = base(size, norm="layernorm", n_layers=LAYERS.get(size, 4))
  warmup = config.train.steps // 20  # 5% of the steps
  return Sweep(
      name=NAME, size=size, base=config,
      points=hyper.product([
          hyper.sweep("model.norm_placement", ["post", "pre", "sandwich", "deepnorm"]),
          hyper.named("warmup", {"0": {"optimizer.warmup_steps": 0},
                                 str(warmup): {"optimizer.warmup_steps": warmup}}),
          hyper.fixed({"optimizer.grad_clip": 0.0}),
      ]),
      tune=tune(size, log_grid(1e-3, 3e-2)),
      reference=f"norm_placement=pre,warmup={warmup}",
      plots=("curves", "final", "tuning"),
      description=f"norm placement x warmup (0, {warmup} steps), each at its best lr, no clipping "
                  "(Xiong et al. 2020)")
