"""Feed-forward activations: ReLU, GELU, Swish against their GLU variants at equal parameters.

Shazeer (2020, "GLU Variants Improve Transformer") replaces the FFN's first matrix by two,
one gated through the activation, and shrinks the hidden width by 2/3 so parameters and
FLOPs stay equal (`glu_param_matched`, on by default); GEGLU and SwiGLU gave the lowest
perplexities of his T5 runs.
"""

from __future__ import annotations

from experiments.sweeps.base import SEEDS, base
from research.sweeps import Sweep, hyper

NAME = "activation"


def get_sweep(size: str) -> Sweep:
  return Sweep(
      name=NAME, size=size, base=base(size, glu_param_matched=True),
      points=hyper.product([
          hyper.sweep("model.activation", ["relu", "gelu", "swish", "reglu", "geglu", "swiglu"]),
          hyper.seeds(SEEDS[size]),
      ]),
      plots=("curves", "final"),
      description="dense FFN activations vs GLU variants at matched parameters (Shazeer 2020)")
