"""LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019), computed in float32."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Norm(nn.Module):
  """`kind` is 'layernorm' (centre, then scale by the std) or 'rmsnorm' (scale by the RMS).

  `use_bias` adds a learned shift to either kind; T5 and LLaMA use none, BERT and GPT-2 do.
  """

  kind: str = "rmsnorm"
  eps: float = 1e-5
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    x32 = x.astype(jnp.float32)
    if self.kind == "layernorm":
      x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    elif self.kind != "rmsnorm":
      raise ValueError(f"Norm.kind={self.kind!r}; choose 'layernorm' or 'rmsnorm'")
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        (features,), self.param_dtype,
    )
    y = y * scale.astype(jnp.float32)
    if self.use_bias:
      bias = self.param(
          "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
          (features,), self.param_dtype,
      )
      y = y + bias.astype(jnp.float32)
    return y.astype(self.dtype)


def make_norm(cfg, name: str) -> Norm:
  """The norm `cfg` asks for (a `ModelConfig`), with its dtypes."""
  return Norm(
      kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.norm_bias,
      dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), name=name,
  )
