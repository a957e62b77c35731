"""Which keys each query may see (`AttentionMask`) and what is added to its scores (`AttentionBias`).

Both are described by per-token vectors rather than an L x L tensor, so an attention
backend can build any tile of them on demand: the plain XLA backend builds all of it,
a blockwise (flash) backend one tile at a time.

Token order (`*_index`) decides causality and sliding windows; `*_segment` separates packed
sequences and marks padding (segment 0); `*_pos` are the positions the position encodings
see, which may differ from the order (GLM's 2D positions, left padding).

A blockwise backend pads both (`pad`), takes sub-ranges with traced starts (`block`), builds
each tile from them (`tile`), and asks which tiles are provably empty (`live_tiles`).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from research.layers import positions as pos_lib

# Finite, so a row with every key masked (a padding query) gives a uniform softmax, not NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
# Upper bound for the per-block minima/maxima of `live_tiles` over real tokens only.
_BIG = 2 ** 30


def _take(x: jax.Array, start, size: int) -> jax.Array:
  """x[:, start:start + size] of a [B, L] array; `start` may be traced."""
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)


def _pad(x: jax.Array, length: int) -> jax.Array:
  """Zero-pads the second axis of a [B, L] array to `length`."""
  return jnp.pad(x, ((0, 0), (0, length - x.shape[1])))


def _block_stats(values_BL: jax.Array, valid_BL: jax.Array, size: int):
  """Per block of `size` tokens: (min, max) of `values` over valid tokens, [B, blocks] each.

  A block without valid tokens gets min > max, so every overlap test with it fails.
  """
  b, length = values_BL.shape
  values = values_BL.reshape(b, length // size, size)
  valid = valid_BL.reshape(b, length // size, size)
  return (jnp.min(jnp.where(valid, values, _BIG), axis=-1),
          jnp.max(jnp.where(valid, values, -_BIG), axis=-1))


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
  # Promise that q_index and k_index are both arange(T) with T == S (self-attention over
  # fresh sequences, no cache), so kernels with a built-in top-left causal mask (cuDNN,
  # Pallas) may use it. False is always safe.
  aligned: bool = flax.struct.field(pytree_node=False, default=False)

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

  def pad(self, q_len: int, k_len: int) -> "AttentionMask":
    """Queries padded to q_len and keys to k_len; the added tokens are padding (segment 0)."""
    return self.replace(
        q_index=_pad(self.q_index, q_len), k_index=_pad(self.k_index, k_len),
        q_segment=_pad(self.q_segment, q_len), k_segment=_pad(self.k_segment, k_len),
        aligned=self.aligned and q_len == self.q_index.shape[1] and k_len == self.k_index.shape[1])

  def block(self, q_start, q_size: int, k_start, k_size: int) -> "AttentionMask":
    """The mask of queries [q_start, q_start + q_size) and keys [k_start, k_start + k_size);
    the starts may be traced (a loop index), the sizes are static."""
    return self.replace(
        q_index=_take(self.q_index, q_start, q_size), q_segment=_take(self.q_segment, q_start, q_size),
        k_index=_take(self.k_index, k_start, k_size), k_segment=_take(self.k_segment, k_start, k_size),
        aligned=False)

  def live_tiles(self, block_q: int, block_k: int) -> jax.Array:
    """bool[T / block_q, S / block_k]: False where no query of the tile, in any sequence of the
    batch, may see any of its keys, so a blockwise backend may skip the tile.

    Conservative: decided from each block's range of segment ids and token order, without
    building the tile. Exact for causal masks, sliding windows, packed (contiguous) segments,
    padding and empty cache slots; a tile it keeps may still turn out empty.
    """
    q_valid, k_valid = self.q_segment != 0, self.k_segment != 0
    qs_min, qs_max = _block_stats(self.q_segment, q_valid, block_q)
    ks_min, ks_max = _block_stats(self.k_segment, k_valid, block_k)
    qi_min, qi_max = _block_stats(self.q_index, q_valid, block_q)
    ki_min, ki_max = _block_stats(self.k_index, k_valid, block_k)
    q = lambda x: x[:, :, None]  # noqa: E731  [B, tq, 1]
    k = lambda x: x[:, None, :]  # noqa: E731  [B, 1, tk]
    # Some pair with equal segment ids exists only if the two ranges of ids overlap (a block
    # without real tokens has an empty range).
    live = (q(qs_min) <= k(ks_max)) & (k(ks_min) <= q(qs_max))
    if self.causal:
      visible = k(ki_min) <= q(qi_max)
      if self.prefix_len is not None:
        visible = visible | (k(ki_min) < self.prefix_len[:, None, None])
      live = live & visible
    if self.window is not None:
      live = live & (q(qi_min) - k(ki_max) < self.window)
    return jnp.any(live, axis=0)


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

  def pad(self, q_len: int, k_len: int) -> "AttentionBias":
    return self.replace(q_pos=_pad(self.q_pos, q_len), k_pos=_pad(self.k_pos, k_len))

  def block(self, q_start, q_size: int, k_start, k_size: int) -> "AttentionBias":
    """The bias of queries [q_start, q_start + q_size) and keys [k_start, k_start + k_size)."""
    return self.replace(q_pos=_take(self.q_pos, q_start, q_size), k_pos=_take(self.k_pos, k_start, k_size))

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
