"""Contiguous key/value cache for incremental decoding.

The cache is an explicit pytree passed into the model and returned updated, so decoding is
a pure function that jit, scan and sharding treat like any other. Keys and values are
stacked over layers (L first) so a scanned layer stack consumes them as scan inputs.
Grouped- and multi-query models store only their K key/value heads.

Writes past `max_len` would be clamped by `dynamic_update_slice`; callers size the cache
for prompt + new tokens up front (research.inference.generate checks this).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from research.layers.masks import AttentionMask


def _write(buf_B: jax.Array, new_B: jax.Array, index_B: jax.Array) -> jax.Array:
  """Writes new[b] into buf[b] starting at slot index[b], for every sequence b."""
  return jax.vmap(lambda b, n, i: jax.lax.dynamic_update_slice_in_dim(b, n, i, axis=0))(
      buf_B, new_B.astype(buf_B.dtype), index_B)


def _write_layer(buf_LB: jax.Array, new_B: jax.Array, index_B: jax.Array, layer: int) -> jax.Array:
  """`_write` into layer `layer` of stacked buffers [L, B, S, ...], in place."""
  write = lambda b, n, i: jax.lax.dynamic_update_slice(  # noqa: E731
      b, n[None].astype(b.dtype), (layer, i) + (0,) * (n.ndim - 1))
  return jax.vmap(write, in_axes=(1, 0, 0), out_axes=1)(buf_LB, new_B, index_B)


@flax.struct.dataclass
class LayerCache:
  """One layer's keys/values and the slot where this step's first token goes.

  With `layer` set, k and v are every layer's stacked arrays ([L, B, S, K, H]) and this is
  layer `layer`'s view of them: the step's keys/values are written into that layer's slab in
  place, and nothing is copied out or stacked back (the loop-form stack decodes this way).
  """

  k: jax.Array  # [B, S, K, H], or [L, B, S, K, H] with `layer`
  v: jax.Array
  write_index: jax.Array  # int32[B]
  layer: int | None = flax.struct.field(pytree_node=False, default=None)

  def update(self, k_BTKH: jax.Array, v_BTKH: jax.Array) -> tuple["LayerCache", jax.Array, jax.Array]:
    """Writes this step's keys/values; returns the new cache and all keys/values so far."""
    if self.layer is None:
      k = _write(self.k, k_BTKH, self.write_index)
      v = _write(self.v, v_BTKH, self.write_index)
      return self.replace(k=k, v=v), k, v
    k = _write_layer(self.k, k_BTKH, self.write_index, self.layer)
    v = _write_layer(self.v, v_BTKH, self.write_index, self.layer)
    return self.replace(k=k, v=v), k[self.layer], v[self.layer]

  def attend(self, q_BTNH, k_BTKH, v_BTKH, mask: AttentionMask, bias, backend, **kwargs):
    """(new cache, out_BTNH, probs) of this step's queries over every slot, via `backend`.

    The paged cache (research.layers.paged_kv_cache) has the same method, so attention
    does not care which cache it holds.
    """
    cache, k, v = self.update(k_BTKH, v_BTKH)
    out, probs = backend(q_BTNH, k, v, mask, bias, **kwargs)
    return cache, out, probs


@flax.struct.dataclass
class StaticKV:
  """Keys/values projected once and reused by every later step: cross-attention over a fixed
  encoder output while decoding. `Attention` skips its key/value projections when given one."""

  k: jax.Array  # [B, S, K, H]
  v: jax.Array  # [B, S, K, H]


@flax.struct.dataclass
class KVCache:
  k: jax.Array  # [L, B, S, K, H]
  v: jax.Array  # [L, B, S, K, H]
  segment: jax.Array  # int32[B, S]: 1 for a written real token, 0 for padding or empty
  position: jax.Array  # int32[B, S]: the position each written token was encoded at
  length: jax.Array  # int32[B]: slots written so far
  next_position: jax.Array  # int32[B]: position the next real token gets

  @classmethod
  def init(cls, cfg, batch: int, max_len: int, dtype=None,
           n_layers: int | None = None) -> "KVCache":
    """An empty cache of `max_len` slots for `cfg` (a ModelConfig) and `n_layers` layers
    (None: cfg.n_layers; an encoder-decoder's decoder passes its own depth)."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    layers = cfg.n_layers if n_layers is None else n_layers
    shape = (layers, batch, max_len, cfg.num_kv_heads, cfg.dim_per_head)
    zeros = jnp.zeros((batch, max_len), jnp.int32)
    return cls(
        k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), segment=zeros, position=zeros,
        length=jnp.zeros((batch,), jnp.int32), next_position=jnp.zeros((batch,), jnp.int32),
    )

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  def stacked_layers(self) -> LayerCache:
    """Every layer's slice, stacked on a leading L axis (write_index repeated per layer)."""
    index = jnp.broadcast_to(self.length, (self.k.shape[0], *self.length.shape))
    return LayerCache(k=self.k, v=self.v, write_index=index)

  def begin_step(self, valid_BT: jax.Array, window: int | None = None):
    """For a step of new tokens (valid marks non-padding): their positions, the attention
    mask over every slot, and the segment/position buffers after writing them."""
    b, t = valid_BT.shape
    valid_BT = valid_BT.astype(jnp.int32)
    positions = self.next_position[:, None] + jnp.cumsum(valid_BT, axis=1, dtype=jnp.int32) - 1
    positions = jnp.maximum(positions, 0)
    segment = _write(self.segment, valid_BT, self.length)
    position = _write(self.position, positions, self.length)
    mask = AttentionMask(
        q_index=self.length[:, None] + jnp.arange(t, dtype=jnp.int32)[None],
        k_index=jnp.broadcast_to(jnp.arange(self.max_len, dtype=jnp.int32), (b, self.max_len)),
        q_segment=valid_BT, k_segment=segment, causal=True, window=window)
    return positions, mask, segment, position

  def finish_step(self, layers: LayerCache, segment, position, valid_BT) -> "KVCache":
    return self.replace(
        k=layers.k, v=layers.v, segment=segment, position=position,
        length=self.length + valid_BT.shape[1],
        next_position=self.next_position + valid_BT.sum(axis=1, dtype=jnp.int32),
    )


@flax.struct.dataclass
class EncoderDecoderCache:
  """An encoder-decoder's decoding state: the decoder's own keys/values (a KVCache of its
  layers), every decoder layer's keys/values of the encoder output, and the encoder's padding.

  `cross` is a LayerCache of S slots until the first decoder step projects the encoder output
  into it, and a StaticKV from then on, so later steps reuse it instead of re-projecting.
  """

  self_attn: KVCache
  cross: LayerCache | StaticKV  # k, v: [L, B, S, K, H]
  encoder_segment: jax.Array  # int32[B, S]: 0 marks encoder padding

  @classmethod
  def init(cls, cfg, encoder_segment: jax.Array, max_len: int, dtype=None) -> "EncoderDecoderCache":
    """An empty cache of `max_len` decoder slots over an encoder output with this padding."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    batch, source_len = encoder_segment.shape
    layers = cfg.decoder_layers
    shape = (layers, batch, source_len, cfg.num_kv_heads, cfg.dim_per_head)
    cross = LayerCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                       write_index=jnp.zeros((layers, batch), jnp.int32))
    return cls(self_attn=KVCache.init(cfg, batch, max_len, dtype, n_layers=layers), cross=cross,
               encoder_segment=jnp.asarray(encoder_segment, jnp.int32))

  @property
  def cross_ready(self) -> bool:
    """Whether the encoder's keys/values are already projected (static: a pytree type)."""
    return isinstance(self.cross, StaticKV)
