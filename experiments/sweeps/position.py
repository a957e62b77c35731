"""Position encodings trained at one length and evaluated at 1x, 2x, 4x and 8x that length,
each at its own best learning rate.

The paper: Press et al. (2021, "Train Short, Test Long", ALiBi) train 247M-parameter LMs on
WikiText-103 at one length and evaluate on longer inputs: sinusoidal positions fail past the
training length, rotary and T5's bias extrapolate a little, and ALiBi's linear biases keep
the loss flat (or improving) far past it. They tune nothing per encoding.

Ours: learned, sinusoidal, rotary, ALiBi, T5 bias and no positions (Haviv et al. 2022) in a
character LM on Tiny Shakespeare, each tuned over a learning-rate grid and compared at its
best (3 seeds) against sinusoidal, at 1x (the tuning metric) and at each longer length. Every
encoding gets the same embedding treatment: token embeddings times sqrt(d_model)
(`model.embed_scale`, Vaswani et al. 2017, section 3.4), which the added sinusoids need (at
amplitude 1 they drown embeddings initialised at std 0.02) and which the others then share.
A learned table has no entry past its length, so it is evaluated at 1x only; the report marks
the rest as not measurable.
"""

from __future__ import annotations

from experiments.sweeps.base import base, tune
from research.sweeps import Measure, Sweep, hyper

NAME = "position"
MULTIPLIERS = (1, 2, 4, 8)


def get_sweep(size: str) -> Sweep:
  config = base(size, embed_scale=True)
  length = config.data.seq_len
  return Sweep(
      name=NAME, size=size, base=config,
      points=hyper.sweep("model.position", ["learned", "sinusoidal", "rope", "alibi", "t5", "none"]),
      tune=tune(size), reference="position=sinusoidal",
      metrics=tuple(f"eval_loss@{length * m}" if m > 1 else "eval_loss" for m in MULTIPLIERS),
      measures=(Measure("eval_at_lengths", {
          "multipliers": MULTIPLIERS, "tokens": 131072 if size == "full" else 16384,
          "batch_tokens": 32768 if size == "full" else 4096}),),
      plots=("curves", "final", "tuning", "lengths"),
      description="position encodings, each at its best lr, evaluated at 1x-8x the training length "
                  "(Press et al. 2021)")
