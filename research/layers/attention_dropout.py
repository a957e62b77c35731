"""Attention dropout as a pure function of (seed, batch row, head, query row, key column).

A blockwise backend never holds the whole [B, N, T, S] probability matrix, and its backward
pass must drop exactly the entries its forward dropped. A counter-based generator gives
both: the keep bit of every entry is a hash of its coordinates (the idea of counter-based
RNGs, Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"), so any tile can
be regenerated on demand, and every backend that uses this module drops the same entries
for the same key: `xla` and `chunked` agree exactly with dropout on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive integers over the word


def _mix(x: jax.Array) -> jax.Array:
  """A 32-bit avalanche permutation (Wellons' 'lowbias32' finaliser)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def seed_from_key(rng: jax.Array) -> jax.Array:
  """uint32 scalar seed drawn from a JAX PRNG key."""
  return jax.random.bits(rng, (), jnp.uint32)


def keep_mask(seed: jax.Array, rate: float, shape_BNTS: tuple[int, int, int, int],
              q_start=0, k_start=0) -> jax.Array:
  """bool[B, N, t, s]: which probabilities of the tile starting at (q_start, k_start) survive.

  Each entry survives with probability 1 - rate, independently of the tile it is asked for.
  """
  b, n, t, s = shape_BNTS
  u32 = lambda x: jnp.asarray(x).astype(jnp.uint32)  # noqa: E731
  golden = jnp.uint32(_GOLDEN)
  row = u32(jnp.arange(b * n).reshape(b, n))
  h = _mix(_mix(u32(seed) + golden) ^ _mix(row * golden + jnp.uint32(1)))  # [B, N]
  q = u32(q_start) + u32(jnp.arange(t))
  h = _mix(h[:, :, None] ^ (q * golden + jnp.uint32(2)))  # [B, N, t]
  kk = u32(k_start) + u32(jnp.arange(s))
  h = _mix(h[..., None] ^ _mix(kk * golden + jnp.uint32(3)))  # [B, N, t, s]
  threshold = jnp.uint32(min(int(round(rate * 2.0 ** 32)), 2 ** 32 - 1))
  return h >= threshold
