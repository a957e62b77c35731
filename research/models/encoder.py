"""Encoder-only family: BERT (Devlin et al. 2019), RoBERTa (Liu et al. 2019), ALBERT (Lan et al. 2020).

    out = model.apply({"params": params}, input_ids=..., attention_mask=..., token_type_ids=...)
    out["hidden"]   float32-or-compute-dtype [B, T, D], the final hidden states
    out["pooled"]   [B, D] when cfg.pooler
    out["mlm"]      [B, T, V] masked-LM logits; out["nsp"], out["sop"] [B, 2];
    out["classification"] [B, C]; out["token_classification"] [B, T, C] (plus out["crf"], the
    CRF's CRFParams, when cfg.crf); out["extractive_qa"] {"start": [B, T], "end": [B, T]}

Keyword names follow transformers' forward. The same layers, block placements, stack (scan,
remat, pipeline) and sharding names as the decoder; attention is bidirectional within each
sequence (or each packed segment), never across padding. The family's variants are config
values: learned absolute positions with token-type embeddings and an embedding LayerNorm
(BERT), positions offset past the padding index (RoBERTa, `position_padding_idx`), a factorised
embedding and cross-layer sharing (ALBERT, `embed_dim`, `albert_sharing`). Every other sweep
axis (norm, placement, activation, rope/alibi/t5 positions, GQA) applies unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.config.model import SEQUENCE_HEADS, ModelConfig
from research.layers import crf as crf_lib
from research.layers import linear, masks, norms
from research.layers import positions as pos_lib
from research.layers.block import Block
from research.layers.shared_stack import SharedStack
from research.layers.stack import Stack
from research.models import heads


def padding_offset_positions(input_ids_BT: jax.Array, padding_idx: int) -> jax.Array:
  """RoBERTa's position ids (transformers' `create_position_ids_from_input_ids`): non-padding
  tokens count up from padding_idx + 1, padding tokens get padding_idx."""
  real = (input_ids_BT != padding_idx).astype(jnp.int32)
  return jnp.cumsum(real, axis=1) * real + padding_idx


class EncoderEmbedder(nn.Module):
  """Token + position + token-type embeddings of width E, norm, dropout, then E -> D."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    e, pdtype = cfg.embedding_width, jnp.dtype(cfg.param_dtype)
    self.tokens = linear.Embed(cfg.vocab_size, e, embedding_init=linear.normal(cfg.init_std),
                               dtype=jnp.dtype(cfg.dtype), param_dtype=pdtype)
    if cfg.position == "learned":
      self.positions = pos_lib.LearnedPositions(cfg.max_seq_len, e, cfg.init_std, pdtype)
    if cfg.type_vocab_size:
      self.token_types = linear.Embed(
          cfg.type_vocab_size, e, embedding_init=linear.normal(cfg.init_std),
          axes=("token_types", "embed"), dtype=jnp.dtype(cfg.dtype), param_dtype=pdtype)
    if cfg.embed_norm:
      self.norm = norms.make_norm(cfg, "norm")
    if cfg.embed_dim is not None:
      # ALBERT's embedding_hidden_mapping_in: the factorised embedding's E x H half.
      self.project = linear.Linear(
          (e,), (cfg.d_model,), ("factor_embed", "embed"), use_bias=True,
          kernel_init=linear.normal(cfg.init_std), dtype=jnp.dtype(cfg.dtype), param_dtype=pdtype)
    self.dropout = nn.Dropout(cfg.embed_dropout)

  def __call__(self, ids_BT, positions_BT, types_BT, deterministic=True):
    cfg = self.cfg
    x = self.tokens(ids_BT)
    if cfg.embed_scale:
      x = x * jnp.asarray(cfg.embedding_width ** 0.5, x.dtype)
    if cfg.position == "learned":
      x = x + self.positions(positions_BT).astype(x.dtype)
    elif cfg.position == "sinusoidal":
      x = x + pos_lib.sinusoidal(positions_BT, cfg.embedding_width).astype(x.dtype)
    if cfg.type_vocab_size:
      x = x + self.token_types(types_BT)
    if cfg.embed_norm:
      x = self.norm(x)
    x = self.dropout(x, deterministic=deterministic)
    if cfg.embed_dim is not None:
      x = self.project(x)
    return x

  def attend(self, x_BTE):
    return self.tokens.attend(x_BTE)


class Encoder(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array | None = None,
      token_type_ids: jax.Array | None = None,
      position_ids: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      deterministic: bool = True,
  ) -> dict:
    cfg = self.cfg
    b, t = input_ids.shape
    valid = jnp.ones((b, t), jnp.int32) if attention_mask is None else attention_mask.astype(jnp.int32)
    segment = valid if segment_ids is None else segment_ids.astype(jnp.int32) * valid
    if position_ids is not None:
      positions = position_ids
    elif cfg.position_padding_idx is not None:
      positions = padding_offset_positions(input_ids, cfg.position_padding_idx)
    elif segment_ids is not None:
      positions = masks.segment_positions(segment)  # packed documents restart at 0
    else:
      # As transformers' BERT: 0..T-1 whatever the padding.
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    types = jnp.zeros((b, t), jnp.int32) if token_type_ids is None else token_type_ids
    index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    mask = masks.AttentionMask(q_index=index, k_index=index, q_segment=segment, k_segment=segment,
                               causal=False)

    embedder = EncoderEmbedder(cfg, name="embed")
    x = embedder(input_ids, positions, types, deterministic)
    rel_table = None
    if cfg.position == "t5":
      rel_table = pos_lib.RelativeBiasTable(
          cfg.rel_buckets, cfg.n_heads, cfg.init_std, jnp.dtype(cfg.param_dtype), name="rel_bias")()
    bias = masks.attention_bias(cfg, positions, positions, rel_table, bidirectional=True)

    block_kwargs = (("deepnorm", cfg.deepnorm()),) if cfg.norm_placement == "deepnorm" else ()
    if cfg.albert_sharing == "none":
      x, _ = Stack(cfg, Block, cfg.n_layers, block_kwargs, name="blocks")(
          x, mask, bias, positions, None, deterministic)
    else:
      x = SharedStack(cfg, block_kwargs, name="blocks")(x, mask, bias, positions, deterministic)
    if cfg.has_final_norm:
      x = norms.make_norm(cfg, "final_norm")(x)
    self.sow("intermediates", "final_hidden", x)
    return self._heads(x, embedder, deterministic)

  def _heads(self, x_BTD, embedder, deterministic) -> dict:
    cfg = self.cfg
    out = {"hidden": x_BTD}
    if cfg.pooler:
      out["pooled"] = heads.Pooler(cfg, name="pooler")(x_BTD)
    # BERT's released code classifies the pooled [CLS] vector; without a pooler, the raw one.
    sequence = out.get("pooled", x_BTD[:, 0])
    dropout = cfg.resid_dropout if cfg.head_dropout is None else cfg.head_dropout
    for head in cfg.encoder_heads:
      if head == "mlm":
        out[head] = heads.MLMHead(cfg, name=head)(x_BTD, embedder)
      elif head in SEQUENCE_HEADS:
        classes = cfg.num_labels if head == "classification" else 2
        # As transformers: BERT's NSP layer reads the pooled vector without dropout.
        rate = 0.0 if head == "nsp" else dropout
        out[head] = heads.Classifier(cfg, classes, rate, name=head)(sequence, deterministic)
      elif head == "token_classification":
        out[head] = heads.Classifier(cfg, cfg.num_labels, dropout, name=head)(x_BTD, deterministic)
        if cfg.crf:
          out["crf"] = crf_lib.CRF(cfg.num_labels, jnp.dtype(cfg.param_dtype), name="crf")()
      elif head == "extractive_qa":
        scores = heads.Classifier(cfg, 2, 0.0, name=head)(x_BTD, deterministic)
        out[head] = {"start": scores[..., 0], "end": scores[..., 1]}
    return out
