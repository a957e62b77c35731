"""Bottleneck adapters (Houlsby et al. 2019): a small residual MLP after each sub-layer.

    adapter(h) = h + W_up f(W_down h + b_down) + b_up          (Houlsby et al. 2019, fig. 2)

applied to the output of every attention module and every feed-forward module (dense or
mixture of experts), before the block adds it to the residual stream, with a bottleneck of
`peft.bottleneck` units and the non-linearity `peft.adapter_activation`. Houlsby et al.
initialise near the identity; here W_up and b_up start at zero, so the adapted model starts as
the base model exactly and W_up receives gradient from the first step. Parameters live under
`attn/adapter` and `mlp/adapter` (`moe/adapter`), in float32.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.layers import activations, linear
from research.layers.attention import Attention
from research.layers.ffn import MLP
from research.layers.moe import MoE
from research.peft import core


class Bottleneck(nn.Module):
  d_model: int
  bottleneck: int
  activation: str
  init_std: float

  @nn.compact
  def __call__(self, h_BTD: jax.Array) -> jax.Array:
    act, _ = activations.get(self.activation)
    down = linear.Linear((self.d_model,), (self.bottleneck,), ("embed", "adapter"), use_bias=True,
                         kernel_init=linear.normal(self.init_std), name="down")
    up = linear.Linear((self.bottleneck,), (self.d_model,), ("adapter", "embed"), use_bias=True,
                       kernel_init=nn.initializers.zeros, name="up")
    return h_BTD + up(act(down(h_BTD.astype(jnp.float32)))).astype(h_BTD.dtype)


@dataclasses.dataclass(frozen=True)
class Adapters(core.Method):

  def intercept(self, next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, (Attention, MLP, MoE)):
      return next_fun(*args, **kwargs)
    out = next_fun(*args, **kwargs)
    # Created inside the intercepted call, so it is a child of that module.
    adapter = Bottleneck(module.cfg.d_model, self.cfg.bottleneck, self.cfg.adapter_activation,
                         self.cfg.init_std, name="adapter")
    if isinstance(module, Attention):
      y, cache = out
      return adapter(y), cache
    return adapter(out)
