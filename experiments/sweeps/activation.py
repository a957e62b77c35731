"""Feed-forward activations: ReLU, GELU, Swish against their GLU variants at equal parameters,
each at its own best learning rate.

The paper: Shazeer (2020, "GLU Variants Improve Transformer") replaces the FFN's first matrix
by two, one gated through the activation, and shrinks the hidden width by 2/3 so parameters
and FLOPs stay equal; in T5-base pre-training (span corruption on C4, 65K steps, one learning
rate for all variants) GEGLU and SwiGLU reached the lowest perplexity, the ReLU FFN the highest.

Ours: the same six FFNs, parameter-matched the same way (`glu_param_matched`, hidden widths
rounded to integers, so counts agree to 0.3%), in a decoder-only character LM on Tiny
Shakespeare, each tuned over a learning-rate grid and compared at its own best against the
ReLU FFN (the paper's baseline), with 3 seeds at that rate. Models are 0.2M (quick) to 10M
(full) parameters against T5-base's 220M.
"""

from __future__ import annotations

from experiments.sweeps.base import base, tune
from research.sweeps import Sweep, hyper

NAME = "activation"


def get_sweep(size: str) -> Sweep:
  return Sweep(
      name=NAME, size=size, base=base(size, glu_param_matched=True),
      points=hyper.sweep("model.activation", ["relu", "gelu", "swish", "reglu", "geglu", "swiglu"]),
      tune=tune(size), reference="activation=relu",
      plots=("curves", "final", "tuning"),
      description="dense FFN activations vs GLU variants at matched parameters, each at its best lr "
                  "(Shazeer 2020)")
