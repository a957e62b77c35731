"""Position encodings trained at one length and evaluated at 1x, 2x, 4x and 8x that length.

Press et al. (2021, "Train Short, Test Long", ALiBi) find that sinusoidal positions fail
past the training length, rotary and T5's bias extrapolate a little, and ALiBi's linear
biases keep the loss flat (or improving) far past it. A learned table has no entry past its
length, so it is trained and evaluated at 1x only; the report marks the rest as not measurable.
Sinusoidal positions come with the sqrt(d_model) embedding scale they were proposed with
(`model.embed_scale`, Vaswani et al. 2017, section 3.4); without it they drown the tokens.
"""

from __future__ import annotations

from experiments.sweeps.base import SEEDS, base
from research.sweeps import Measure, Sweep, hyper

NAME = "position"


def get_sweep(size: str) -> Sweep:
  return Sweep(
      name=NAME, size=size, base=base(size),
      points=hyper.product([
          hyper.named("position", {
              name: {"model.position": name, **({"model.embed_scale": True} if name == "sinusoidal" else {})}
              for name in ("learned", "sinusoidal", "rope", "alibi", "t5", "none")}),
          hyper.seeds(SEEDS[size]),
      ]),
      measures=(Measure("eval_at_lengths", {
          "multipliers": (1, 2, 4, 8), "tokens": 16384 if size == "cpu" else 131072,
          "batch_tokens": 4096 if size == "cpu" else 32768}),),
      plots=("curves", "final", "lengths"),
      description="position encodings, evaluated at 1x-8x the training length (Press et al. 2021)")
