"""Projections and embeddings whose parameters carry logical axis names.

Every weight is created through `nn.with_logical_partitioning`, so the sharding rules
(research.sharding) can place it on any mesh without the module knowing the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


def normal(std: float) -> Initializer:
  return nn.initializers.normal(stddev=std)


def xavier_normal(gain: float, in_dims: int) -> Initializer:
  """Glorot normal with `gain`, fans over the first `in_dims` dims and the rest (DeepNet)."""

  def init(key, shape, dtype=jnp.float32):
    fan_in = 1
    for s in shape[:in_dims]:
      fan_in *= s
    fan_out = 1
    for s in shape[in_dims:]:
      fan_out *= s
    std = gain * (2.0 / (fan_in + fan_out)) ** 0.5
    return std * jax.random.normal(key, shape, dtype)

  return init


class Linear(nn.Module):
  """Contracts the last `len(in_shape)` dims of x with a kernel of shape in_shape + out_shape."""

  in_shape: Sequence[int]
  out_shape: Sequence[int]
  axes: Sequence[str]
  use_bias: bool = False
  kernel_init: Initializer = normal(0.02)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n_in, n_out = len(self.in_shape), len(self.out_shape)
    if len(self.axes) != n_in + n_out:
      raise ValueError(f"{self.name}: axes {self.axes} do not match {self.in_shape}+{self.out_shape}")
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(self.kernel_init, tuple(self.axes)),
        (*self.in_shape, *self.out_shape),
        self.param_dtype,
    )
    contract_x = tuple(range(x.ndim - n_in, x.ndim))
    y = jax.lax.dot_general(
        x.astype(self.dtype),
        kernel.astype(self.dtype),
        ((contract_x, tuple(range(n_in))), ((), ())),
    )
    if self.use_bias:
      bias = self.param(
          "bias",
          nn.with_logical_partitioning(nn.initializers.zeros, tuple(self.axes[n_in:])),
          tuple(self.out_shape),
          self.param_dtype,
      )
      y = y + bias.astype(self.dtype)
    return y


class Embed(nn.Module):
  """Token embedding table, also usable as the (tied) output projection."""

  num_embeddings: int
  features: int
  embedding_init: Initializer = normal(0.02)
  axes: tuple[str, str] = ("vocab", "embed")
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(self.embedding_init, self.axes),
        (self.num_embeddings, self.features),
        self.param_dtype,
    )

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x_BTD: jax.Array) -> jax.Array:
    """Logits against every row of the table: the tied unembedding."""
    return jnp.einsum("BTD,VD->BTV", x_BTD.astype(self.dtype), self.embedding.astype(self.dtype))
