"""Activation registry: name -> (function, gated).

Gated entries are the GLU variants of Shazeer (2020), "GLU Variants Improve Transformer":
FFN(x) = (act(x W_gate) * x W_up) W_out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

_gelu_exact = functools.partial(jax.nn.gelu, approximate=False)
_gelu_tanh = functools.partial(jax.nn.gelu, approximate=True)

ACTIVATIONS: dict[str, tuple[Callable[[jax.Array], jax.Array], bool]] = {
    "relu": (jax.nn.relu, False),
    "gelu": (_gelu_exact, False),
    # GPT-2's "gelu_new" and BLOOM's gelu: the tanh approximation of Hendrycks & Gimpel (2016).
    "gelu_tanh": (_gelu_tanh, False),
    "swish": (jax.nn.silu, False),
    "silu": (jax.nn.silu, False),
    "swiglu": (jax.nn.silu, True),
    "geglu": (_gelu_exact, True),
    # T5 v1.1's gated-gelu uses the tanh approximation.
    "geglu_tanh": (_gelu_tanh, True),
    "reglu": (jax.nn.relu, True),
}


def get(name: str) -> tuple[Callable[[jax.Array], jax.Array], bool]:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation={name!r} is not one of: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]
