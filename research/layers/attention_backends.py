"""Attention backends behind one signature, chosen by `ModelConfig.attention_impl`.

    backend(q_BTNH, k_BSKH, v_BSKH, mask, bias, *, scale, dropout_rate, dropout_rng)
        -> (out_BTNH, probs_BNTS or None)

K/V keep their K heads: grouped-query attention reshapes the N query heads into K groups
of G = N / K instead of repeating K/V in memory.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from research.layers.masks import MASK_VALUE, AttentionBias, AttentionMask

Backend = Callable[..., tuple[jax.Array, jax.Array | None]]


def xla_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    mask: AttentionMask,
    bias: AttentionBias | None,
    *,
    scale: float,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Softmax(q k^T * scale + bias) v, materialising the [B, N, T, S] scores."""
  b, t, n, h = q_BTNH.shape
  k_heads = k_BSKH.shape[2]
  q_BTKGH = q_BTNH.reshape(b, t, k_heads, n // k_heads, h)
  scores = jnp.einsum(
      "BTKGH,BSKH->BKGTS", q_BTKGH, k_BSKH, preferred_element_type=jnp.float32) * scale
  if bias is not None and bias.active:
    scores = scores + bias.tile().reshape(b, k_heads, n // k_heads, t, -1)
  scores = jnp.where(mask.tile()[:, None, None], scores, MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("BKGTS,BSKH->BTKGH", probs.astype(v_BSKH.dtype), v_BSKH)
  return out.reshape(b, t, n, h), probs.reshape(b, n, t, -1)


BACKENDS: dict[str, Backend] = {"xla": xla_attention}


def get(name: str) -> Backend:
  if name not in BACKENDS:
    raise ValueError(f"attention_impl={name!r} is not one of: {', '.join(BACKENDS)}")
  return BACKENDS[name]
