"""Position encodings: learned, sinusoidal, rotary (RoPE), ALiBi slopes, T5 relative buckets.

Absolute encodings (learned, sinusoidal) are added to the token embeddings; RoPE rotates
queries and keys inside attention; ALiBi and the T5 bias are additive attention biases,
built per (query, key) pair by research.layers.masks.AttentionBias.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal(positions_BT: jax.Array, features: int) -> jax.Array:
  """Vaswani et al. (2017), section 3.5: PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(.)."""
  i = jnp.arange(features // 2, dtype=jnp.float32)
  inv_freq = 1.0 / (10000.0 ** (2.0 * i / features))
  angles = positions_BT[..., None].astype(jnp.float32) * inv_freq
  pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  pe = pe.reshape(*positions_BT.shape, 2 * (features // 2))
  if features % 2:
    pe = jnp.pad(pe, [(0, 0)] * (pe.ndim - 1) + [(0, 1)])
  return pe


class LearnedPositions(nn.Module):
  """A learned table of `max_len` absolute position vectors (GPT-2, BERT)."""

  max_len: int
  features: int
  init_std: float = 0.02
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, positions_BT: jax.Array) -> jax.Array:
    table = self.param(
        "embedding",
        nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("positions", "embed")),
        (self.max_len, self.features),
        self.param_dtype,
    )
    return jnp.take(table, positions_BT, axis=0)


# ------------------------------------------------------------------------------------ RoPE


def rope_inv_freq(cfg, dims: int | None = None) -> np.ndarray:
  """Rotary inverse frequencies theta^(-2i/d) (Su et al. 2021, eq. 15), with scaling.

  'linear' (Chen et al. 2023, position interpolation) divides every frequency by the factor;
  'llama3' divides only the low frequencies and interpolates between (Llama 3.1 report,
  as implemented in Meta's reference code and transformers' `_compute_llama3_parameters`).
  `dims` is the rotated width (None: cfg.rope_dims).
  """
  dims = cfg.rope_dims if dims is None else dims
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dims, 2, dtype=np.float64) / dims))
  factor = cfg.rope_scaling_factor
  if cfg.rope_scaling == "linear":
    inv_freq = inv_freq / factor
  elif cfg.rope_scaling == "llama3":
    old_len = cfg.rope_original_max_len
    low_wavelen = old_len / cfg.rope_low_freq_factor
    high_wavelen = old_len / cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  return inv_freq.astype(np.float32)


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates the first 2 * len(inv_freq) dims of each head by position * frequency.

  Uses the half-split pairing (dim i with dim i + rot/2) of GPT-NeoX and transformers' LLaMA;
  the remaining dims pass through unrotated (partial rotary, GPT-NeoX's rotary_pct).
  """
  rot = 2 * inv_freq.shape[0]
  angles = positions_BT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x_rot = x_BTNH[..., :rot].astype(jnp.float32)
  x1, x2 = jnp.split(x_rot, 2, axis=-1)
  rotated = x_rot * cos + jnp.concatenate([-x2, x1], axis=-1) * sin
  rotated = rotated.astype(x_BTNH.dtype)
  if rot == x_BTNH.shape[-1]:
    return rotated
  return jnp.concatenate([rotated, x_BTNH[..., rot:]], axis=-1)


def rotate_queries_keys(cfg, q_BTNH: jax.Array, k_BTKH: jax.Array, positions: jax.Array):
  """RoPE on queries and keys: 1D for int[B, T] positions, GLM's 2D for int[B, T, 2].

  2D (ChatGLM-6B; Du et al. 2022, section 2.2.2): the rotary dims split into two halves,
  the first rotated by the position id, the second by the block position id, each half with
  the frequencies of a rotary embedding of its own width.
  """
  if positions.ndim == 2:
    inv_freq = rope_inv_freq(cfg)
    return apply_rope(q_BTNH, positions, inv_freq), apply_rope(k_BTKH, positions, inv_freq)
  half = cfg.rope_dims // 2
  inv_freq = rope_inv_freq(cfg, half)

  def rotate(x):
    first = apply_rope(x[..., :half], positions[..., 0], inv_freq)
    second = apply_rope(x[..., half:], positions[..., 1], inv_freq)
    return jnp.concatenate([first, second], axis=-1)

  return rotate(q_BTNH), rotate(k_BTKH)


# ----------------------------------------------------------------------------------- ALiBi


def alibi_slopes(n_heads: int) -> np.ndarray:
  """Press et al. (2021), section 3: the geometric sequence starting at 2^(-8/n), ratio 2^(-8/n).

  For head counts that are not a power of two the paper takes the slopes of the closest
  lower power of two, then every other slope of the next power of two.
  """

  def power_of_two(n: int) -> list[float]:
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]

  if math.log2(n_heads).is_integer():
    slopes = power_of_two(n_heads)
  else:
    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
  return np.asarray(slopes, dtype=np.float32)


# ------------------------------------------------------------------------ T5 relative bias


def relative_position_bucket(
    relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
  """T5's bucketing (Raffel et al. 2020, section 2.1) of key_position - query_position.

  Half the buckets are exact small distances, the rest grow logarithmically up to
  max_distance; bidirectional stacks spend half the buckets on each direction.
  """
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(
      max_distance / max_exact)
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


class RelativeBiasTable(nn.Module):
  """The learned (buckets, heads) table of T5's relative attention bias, shared by all layers."""

  num_buckets: int
  n_heads: int
  init_std: float = 0.02
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param(
        "embedding",
        nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("relpos_buckets", "heads")),
        (self.num_buckets, self.n_heads),
        self.param_dtype,
    )
