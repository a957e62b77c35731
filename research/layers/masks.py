"""Which keys each query may see (`AttentionMask`) and what is added to its scores (`AttentionBias`).

Both are described by per-token vectors rather than an L x L tensor, so an attention
backend can build any tile of them on demand: the plain XLA backend builds all of it,
a blockwise (flash) backend one tile at a time.

Token order (`*_index`) decides causality and sliding windows; `*_segment` separates packed
sequences and marks padding (segment 0); `*_pos` are the positions the position encodings
see, which may differ from the order (GLM's 2D positions, left padding).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from research.layers import positions as pos_lib

# Finite, so a row with every key masked (a padding query) gives a uniform softmax, not NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@flax.struct.dataclass
class AttentionMask:
  q_index: jax.Array  # int32[B, T]
  k_index: jax.Array  # int32[B, S]
  q_segment: jax.Array  # int32[B, T]; 0 marks padding
  k_segment: jax.Array  # int32[B, S]; 0 marks padding or an empty cache slot
  # Prefix-LM: keys with index < prefix_len[b] are visible to every query of the segment.
  prefix_len: jax.Array | None = None  # int32[B]
  causal: bool = flax.struct.field(pytree_node=False, default=True)
  # Sliding window (Mistral): a query sees keys with q_index - k_index < window.
  window: int | None = flax.struct.field(pytree_node=False, default=None)

  def tile(self, q_slice: slice | None = None, k_slice: slice | None = None) -> jax.Array:
    """bool[B, t, s]: whether each query of the tile may attend to each key."""
    q_slice = q_slice or slice(None)
    k_slice = k_slice or slice(None)
    qi = self.q_index[:, q_slice, None]
    ki = self.k_index[:, None, k_slice]
    qs = self.q_segment[:, q_slice, None]
    ks = self.k_segment[:, None, k_slice]
    ok = (qs == ks) & (ks != 0)
    if self.causal:
      visible = ki <= qi
      if self.prefix_len is not None:
        visible = visible | (ki < self.prefix_len[:, None, None])
      ok = ok & visible
    if self.window is not None:
      ok = ok & (qi - ki < self.window)
    return ok


@flax.struct.dataclass
class AttentionBias:
  """Additive score bias: ALiBi slopes and/or a T5 relative-position table."""

  q_pos: jax.Array  # int32[B, T]
  k_pos: jax.Array  # int32[B, S]
  alibi_slopes: jax.Array | None = None  # float32[N]
  rel_table: jax.Array | None = None  # float32[buckets, N]
  rel_bidirectional: bool = flax.struct.field(pytree_node=False, default=False)
  rel_max_distance: int = flax.struct.field(pytree_node=False, default=128)

  @property
  def active(self) -> bool:
    return self.alibi_slopes is not None or self.rel_table is not None

  def map_batch(self, fn) -> "AttentionBias":
    """Applies fn to the per-sequence fields only (the slopes and table are shared)."""
    return self.replace(q_pos=fn(self.q_pos), k_pos=fn(self.k_pos))

  def batch_axes(self, axis: int | None):
    """A vmap in_axes prefix: `axis` for the per-sequence fields, None for the shared ones."""
    return self.replace(q_pos=axis, k_pos=axis,
                        alibi_slopes=None,
                        rel_table=None)

  def tile(self, q_slice: slice | None = None, k_slice: slice | None = None) -> jax.Array:
    """float32[B, N, t, s] bias of the tile."""
    q_slice = q_slice or slice(None)
    k_slice = k_slice or slice(None)
    rel = self.k_pos[:, None, k_slice] - self.q_pos[:, q_slice, None]  # [B, t, s]
    bias = 0.0
    if self.alibi_slopes is not None:
      # Press et al. (2021): -m * (i - j) for query i and key j <= i. Keys after the query (seen
      # by bidirectional attention) get the same distance penalty, -m * |i - j|: the symmetric
      # ALiBi of MosaicBERT (Portes et al. 2023). Causal attention never sees them.
      distance = jnp.abs(rel[:, None]).astype(jnp.float32)
      bias = bias - self.alibi_slopes[None, :, None, None] * distance
    if self.rel_table is not None:
      buckets = pos_lib.relative_position_bucket(
          rel, bidirectional=self.rel_bidirectional,
          num_buckets=self.rel_table.shape[0], max_distance=self.rel_max_distance)
      values = jnp.take(self.rel_table.astype(jnp.float32), buckets, axis=0)  # [B, t, s, N]
      bias = bias + jnp.moveaxis(values, -1, 1)
    return bias


def attention_bias(cfg, q_pos, k_pos, rel_table=None, *, bidirectional: bool) -> AttentionBias | None:
  """The additive bias `cfg.position` asks for: ALiBi slopes, the T5 table, or None."""
  if cfg.position == "alibi":
    return AttentionBias(
        q_pos=q_pos, k_pos=k_pos, alibi_slopes=jnp.asarray(pos_lib.alibi_slopes(cfg.n_heads)))
  if cfg.position == "t5":
    return AttentionBias(
        q_pos=q_pos, k_pos=k_pos, rel_table=rel_table, rel_bidirectional=bidirectional,
        rel_max_distance=cfg.rel_max_distance)
  return None


def segment_positions(segment_BT: jax.Array) -> jax.Array:
  """Position of each token within its run of equal segment ids (restarting at each run)."""
  _, t = segment_BT.shape
  idx = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), segment_BT.shape)
  starts = jnp.concatenate(
      [jnp.ones_like(segment_BT[:, :1], dtype=bool), segment_BT[:, 1:] != segment_BT[:, :-1]], axis=1)
  start_idx = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  return idx - start_idx
