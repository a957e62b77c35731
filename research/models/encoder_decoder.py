"""Encoder-decoder transformer (Vaswani et al. 2017; T5, Raffel et al. 2020; Switch, Fedus et al.
2021).

    logits = model.apply({"params": params}, input_ids=..., attention_mask=...,
                         decoder_input_ids=..., decoder_attention_mask=...)
    encoded, segment = model.apply(variables, input_ids=..., method="encode")
    logits, cache = model.apply(variables, decoder_input_ids=..., encoded=encoded,
                                encoder_segment=segment, cache=cache, method="decode")

Keyword names follow transformers' T5ForConditionalGeneration. The encoder is a stack of
research.layers.block.Block with a bidirectional mask; the decoder a stack of CrossBlock
(self-attention, cross-attention, FFN). One token embedding is shared by both and, when tied,
by the output head, whose input is then scaled by d_model^-0.5 (Mesh TensorFlow's T5;
`scale_decoder_outputs` sets the scale apart from the tying, as transformers' T5 does). With
position='t5' each stack learns one relative bias table, bidirectional buckets in the encoder
and causal ones in the decoder, computed once and added in every layer. DeepNorm uses the
encoder-decoder alpha/beta of DeepNet (`ModelConfig.deepnorm_encdec`). `segment_ids` /
`decoder_segment_ids` pack several examples into a row (decoder segment s attends to encoder
segment s only).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.config.model import ModelConfig
from research.layers import init, linear, masks, norms
from research.layers import positions as pos_lib
from research.layers.block import Block
from research.layers.cross_block import CrossBlock, CrossBlockCache, CrossContext
from research.layers.kv_cache import EncoderDecoderCache, StaticKV
from research.layers.stack import Stack
from research.models.decoder import Embedder


def _segments(ids: jax.Array, attention_mask, segment_ids) -> jax.Array:
  valid = (jnp.ones(ids.shape, jnp.int32) if attention_mask is None
           else attention_mask.astype(jnp.int32))
  return valid if segment_ids is None else segment_ids.astype(jnp.int32) * valid


def _index(b: int, t: int) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))


def _relative_table(cfg: ModelConfig):
  if cfg.position != "t5":
    return None
  return pos_lib.RelativeBiasTable(
      cfg.rel_buckets, cfg.n_heads, cfg.init_std, jnp.dtype(cfg.param_dtype), name="rel_bias")()


def _final(cfg: ModelConfig, x: jax.Array, deterministic: bool) -> jax.Array:
  """Each stack's final norm (when the residual stream is not normalised) and T5's dropout."""
  if not cfg.has_final_norm:
    return x
  x = norms.make_norm(cfg, "final_norm")(x)
  return nn.Dropout(cfg.resid_dropout)(x, deterministic=deterministic)


class Encoder(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BSD, segment_BS, positions_BS, deterministic=True):
    cfg = self.cfg
    b, s = segment_BS.shape
    index = _index(b, s)
    mask = masks.AttentionMask(q_index=index, k_index=index, q_segment=segment_BS,
                               k_segment=segment_BS, causal=False)
    bias = masks.attention_bias(cfg, positions_BS, positions_BS, _relative_table(cfg),
                                bidirectional=True)
    block_kwargs = ((("deepnorm", cfg.deepnorm_encdec()[0]),)
                    if cfg.norm_placement == "deepnorm" else ())
    x, _ = Stack(cfg, Block, cfg.n_layers, block_kwargs, name="blocks")(
        x_BSD, mask, bias, positions_BS, None, deterministic)
    return _final(cfg, x, deterministic)


class Decoder(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, mask, positions_BT, k_positions, context: CrossContext,
               layer_cache: CrossBlockCache | None = None, deterministic=True):
    cfg = self.cfg
    bias = masks.attention_bias(cfg, positions_BT, k_positions, _relative_table(cfg),
                                bidirectional=False)
    block_kwargs = ((("deepnorm", cfg.deepnorm_encdec()[1]),)
                    if cfg.norm_placement == "deepnorm" else ())
    x, layer_cache = Stack(cfg, CrossBlock, cfg.decoder_layers, block_kwargs, name="blocks")(
        x_BTD, mask, bias, positions_BT, layer_cache, deterministic, context)
    return _final(cfg, x, deterministic), layer_cache


class EncoderDecoder(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = Embedder(cfg)
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)
    if not cfg.tie_embeddings:
      self.lm_head = linear.Linear(
          (cfg.d_model,), (cfg.vocab_size,), ("embed", "vocab"),
          kernel_init=init.kernel_init(cfg, "head", 1), dtype=jnp.dtype(cfg.dtype),
          param_dtype=jnp.dtype(cfg.param_dtype))

  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array | None = None,
      decoder_input_ids: jax.Array | None = None,
      decoder_attention_mask: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      decoder_segment_ids: jax.Array | None = None,
      deterministic: bool = True,
  ) -> jax.Array:
    """Logits float32[B, T, V] of the decoder given the whole target side (teacher forcing)."""
    if decoder_input_ids is None:
      raise ValueError("an encoder-decoder model needs decoder_input_ids (the targets shifted "
                       "right, starting with the decoder start token)")
    if (segment_ids is None) != (decoder_segment_ids is None):
      raise ValueError("pass segment_ids and decoder_segment_ids together (packed examples need "
                       "both sides' segment ids to pair them)")
    encoded, segment = self.encode(input_ids, attention_mask, segment_ids, deterministic)
    return self.decode(decoder_input_ids, encoded, segment, decoder_attention_mask,
                       decoder_segment_ids, deterministic=deterministic)

  def encode(self, input_ids, attention_mask=None, segment_ids=None, deterministic=True):
    """(encoder output [B, S, D], encoder segment ids int32[B, S], 0 for padding)."""
    segment = _segments(input_ids, attention_mask, segment_ids)
    positions = masks.segment_positions(segment)
    x = self.embed(input_ids, positions, deterministic)
    return self.encoder(x, segment, positions, deterministic), segment

  def decode(self, decoder_input_ids, encoded, encoder_segment, decoder_attention_mask=None,
             decoder_segment_ids=None, cache: EncoderDecoderCache | None = None,
             deterministic=True):
    """Decoder logits; with `cache`, (logits, cache) for the new tokens only.

    `encoded` may be None once the cache holds the encoder's keys/values (after its first step).
    """
    cfg = self.cfg
    b, t = decoder_input_ids.shape
    if cache is None:
      segment = _segments(decoder_input_ids, decoder_attention_mask, decoder_segment_ids)
      positions = masks.segment_positions(segment)
      mask = masks.AttentionMask(q_index=_index(b, t), k_index=_index(b, t), q_segment=segment,
                                 k_segment=segment, causal=True)
      k_positions, layer_cache = positions, None
    else:
      if decoder_segment_ids is not None:
        raise ValueError("decoder_segment_ids (packing) cannot be combined with a KV cache")
      if encoded is None and not cache.cross_ready:
        raise ValueError("the first cached decoder step needs `encoded` to project the "
                         "encoder's keys/values")
      valid = (jnp.ones((b, t), jnp.int32) if decoder_attention_mask is None
               else decoder_attention_mask.astype(jnp.int32))
      positions, mask, cache_segment, k_positions = cache.self_attn.begin_step(valid)
      segment = valid
      encoder_segment = cache.encoder_segment
      layer_cache = CrossBlockCache(self_attn=cache.self_attn.stacked_layers(), cross=cache.cross)
    s = encoder_segment.shape[1]
    cross_mask = masks.AttentionMask(
        q_index=_index(b, t), k_index=_index(b, s), q_segment=segment, k_segment=encoder_segment,
        causal=False)
    context = CrossContext(encoded=None if cache is not None and cache.cross_ready else encoded,
                           mask=cross_mask)
    x = self.embed(decoder_input_ids, positions, deterministic)
    x, layer_cache = self.decoder(x, mask, positions, k_positions, context, layer_cache,
                                  deterministic)
    self.sow("intermediates", "final_hidden", x)
    if cfg.decoder_output_scaled:
      # Mesh TensorFlow's T5 rescales before its tied unembedding, so the logits do not grow
      # with sqrt(d_model); transformers' T5 sets the rescale apart from the tying.
      x = x * cfg.d_model ** -0.5
    logits = self.embed.attend(x) if cfg.tie_embeddings else self.lm_head(x)
    logits = logits.astype(jnp.float32)
    if cache is None:
      return logits
    new_cache = cache.replace(
        self_attn=cache.self_attn.finish_step(layer_cache.self_attn, cache_segment, k_positions,
                                              valid),
        cross=StaticKV(k=layer_cache.cross.k, v=layer_cache.cross.v))
    return logits, new_cache
