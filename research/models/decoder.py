"""Decoder-only causal language model (GPT-2, LLaMA, Mistral, Qwen2, Falcon, BLOOM, NeoX).

    logits = model.apply({"params": params}, input_ids=..., attention_mask=...)
    logits, cache = model.apply({"params": params}, input_ids=..., cache=cache)

Keyword names follow transformers' forward. `segment_ids` packs several documents into one
row (attention never crosses segments; positions restart per segment).

The same module is the `prefix_lm` family (GLM, Du et al. 2022): `prefix_len` makes the first
prefix_len tokens of a row visible to every token (bidirectional over the prefix, causal after),
and with `block_positions` each token carries GLM's second position id (`block_position_ids`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.config.model import ModelConfig
from research.layers import init, linear, masks, norms
from research.layers import positions as pos_lib
from research.layers.block import Block
from research.layers.kv_cache import KVCache
from research.layers.stack import Stack


class Embedder(nn.Module):
  """Token embedding plus absolute positions and BLOOM's embedding norm, then dropout."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    std = cfg.init_std if cfg.embed_init_std is None else cfg.embed_init_std
    self.tokens = linear.Embed(
        cfg.vocab_size, cfg.d_model, embedding_init=linear.normal(std),
        dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    if cfg.position == "learned":
      self.positions = pos_lib.LearnedPositions(
          cfg.max_seq_len, cfg.d_model, cfg.init_std, jnp.dtype(cfg.param_dtype))
      if cfg.block_positions:
        # GLM's second table, for the position inside a blank (Du et al. 2022, section 2.2.2).
        self.block_positions = pos_lib.LearnedPositions(
            cfg.max_seq_len, cfg.d_model, cfg.init_std, jnp.dtype(cfg.param_dtype))
    if cfg.embed_norm:
      self.norm = norms.make_norm(cfg, "norm")
    self.dropout = nn.Dropout(cfg.embed_dropout)

  def __call__(self, ids_BT, positions_BT, deterministic=True, block_positions_BT=None):
    cfg = self.cfg
    x = self.tokens(ids_BT)
    if cfg.embed_scale:
      x = x * jnp.asarray(cfg.d_model ** 0.5, x.dtype)
    if cfg.position == "learned":
      x = x + self.positions(positions_BT).astype(x.dtype)
      if cfg.block_positions:
        x = x + self.block_positions(block_positions_BT).astype(x.dtype)
    elif cfg.position == "sinusoidal":
      x = x + pos_lib.sinusoidal(positions_BT, cfg.d_model).astype(x.dtype)
    if cfg.embed_norm:
      x = self.norm(x)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x_BTD):
    return self.tokens.attend(x_BTD)


class CausalLM(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array | None = None,
      position_ids: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      cache: KVCache | None = None,
      deterministic: bool = True,
      prefix_len: jax.Array | None = None,
      block_position_ids: jax.Array | None = None,
      last_only: bool = False,
  ):
    """Logits [B, T, V] (and the updated cache when given one); with `last_only`, [B, 1, V]
    of the last position only (a prefill that samples after its last token)."""
    cfg = self.cfg
    b, t = input_ids.shape
    valid = jnp.ones((b, t), jnp.int32) if attention_mask is None else attention_mask.astype(jnp.int32)

    if cache is None:
      segment = valid if segment_ids is None else segment_ids.astype(jnp.int32) * valid
      positions = masks.segment_positions(segment) if position_ids is None else position_ids
      index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
      mask = masks.AttentionMask(
          q_index=index, k_index=index, q_segment=segment, k_segment=segment,
          prefix_len=None if prefix_len is None else jnp.asarray(prefix_len, jnp.int32),
          causal=True, window=cfg.sliding_window, aligned=True)
      k_positions = positions
      layer_cache = None
    else:
      if segment_ids is not None:
        raise ValueError("segment_ids (packing) cannot be combined with a KV cache")
      positions, mask, cache_segment, k_positions = cache.begin_step(valid, cfg.sliding_window)
      if position_ids is not None:
        positions = position_ids
      if prefix_len is not None:
        # The step's first prefix_len tokens (a prompt) see each other, and the cache before them.
        mask = mask.replace(prefix_len=cache.length + jnp.asarray(prefix_len, jnp.int32))
      layer_cache = cache.stacked_layers()

    block = None
    if cfg.block_positions:
      block = (jnp.zeros((b, t), jnp.int32) if block_position_ids is None
               else jnp.asarray(block_position_ids, jnp.int32))
    embedder = Embedder(cfg, name="embed")
    x = embedder(input_ids, positions, deterministic, block)
    rel_table = None
    if cfg.position == "t5":
      rel_table = pos_lib.RelativeBiasTable(
          cfg.rel_buckets, cfg.n_heads, cfg.init_std, jnp.dtype(cfg.param_dtype), name="rel_bias")()
    # A prefix-LM's prefix keys may follow the query, so its T5 buckets are bidirectional.
    bias = masks.attention_bias(cfg, positions, k_positions, rel_table,
                                bidirectional=cfg.family == "prefix_lm")
    rotary = positions
    if block is not None and cfg.position == "rope":
      rotary = jnp.stack([positions, block], axis=-1)  # GLM's 2D RoPE (ChatGLM-6B)

    block_kwargs = (("deepnorm", cfg.deepnorm()),) if cfg.norm_placement == "deepnorm" else ()
    x, layer_cache = Stack(cfg, Block, cfg.n_layers, block_kwargs, name="blocks")(
        x, mask, bias, rotary, layer_cache, deterministic)

    if last_only:
      x = x[:, -1:]
    if cfg.has_final_norm:
      x = norms.make_norm(cfg, "final_norm")(x)
    self.sow("intermediates", "final_hidden", x)
    if cfg.tie_embeddings:
      logits = embedder.attend(x)
    else:
      logits = linear.Linear(
          (cfg.d_model,), (cfg.vocab_size,), ("embed", "vocab"),
          kernel_init=init.kernel_init(cfg, "head", 1), dtype=jnp.dtype(cfg.dtype),
          param_dtype=jnp.dtype(cfg.param_dtype), name="lm_head")(x)
    logits = logits.astype(jnp.float32)
    if cache is None:
      return logits
    return logits, cache.finish_step(layer_cache, cache_segment, k_positions, valid)
