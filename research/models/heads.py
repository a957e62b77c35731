"""Output heads of the encoder-only family (BERT, Devlin et al. 2019; ALBERT, Lan et al. 2020).

  Pooler          tanh(h_[CLS] W + b): one vector per sequence (BERT's `pooler`)
  MLMHead         logits = LN(act(h W_t + b_t)) E^T + b_v, E the token embedding (tied decoder)
  Classifier      a linear layer on one vector per sequence or per token:
                    nsp / sop / classification: softmax(C W^T), C the pooled [CLS] vector
                    token_classification: per-token tag scores (NER), optionally CRF-decoded
                    extractive_qa: start and end scores S . T_i and E . T_j (BERT section 4.2)
  best_span       the highest-scoring answer span a <= b < a + max_len

Einsum letters as in research/layers/attention.py: B batch, T tokens, D model width, E
embedding width (ALBERT factorises it), V vocabulary, C classes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.layers import activations, linear, norms


class Pooler(nn.Module):
  """BERT's pooler: the first token's final hidden state through a dense layer and tanh."""

  cfg: object  # ModelConfig

  @nn.compact
  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    cfg = self.cfg
    dense = linear.Linear(
        (cfg.d_model,), (cfg.d_model,), ("embed", "mlp"), use_bias=True,
        kernel_init=linear.normal(cfg.init_std), dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype), name="dense")
    return jnp.tanh(dense(x_BTD[:, 0]))


class MLMHead(nn.Module):
  """Masked-LM head: transform (dense, activation, norm), then the decoder, tied to the token
  embedding when `tie_embeddings`, plus a per-token output bias (BERT's
  `BertLMPredictionHead`; ALBERT's transform maps D to its embedding width E)."""

  cfg: object  # ModelConfig

  @nn.compact
  def __call__(self, x_BTD: jax.Array, embedder) -> jax.Array:
    cfg = self.cfg
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    e = cfg.embedding_width
    act, _ = activations.get(cfg.activation)  # a GLU activation's nonlinearity alone
    h = linear.Linear((cfg.d_model,), (e,), ("embed", "factor_embed"), use_bias=True,
                      kernel_init=linear.normal(cfg.init_std), dtype=dtype, param_dtype=pdtype,
                      name="transform")(x_BTD)
    h = norms.make_norm(cfg, "norm")(act(h))
    if cfg.tie_embeddings:
      logits = embedder.attend(h)
    else:
      logits = linear.Linear((e,), (cfg.vocab_size,), ("factor_embed", "vocab"),
                             kernel_init=linear.normal(cfg.init_std), dtype=dtype,
                             param_dtype=pdtype, name="decoder")(h)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                      (cfg.vocab_size,), pdtype)
    return (logits + bias.astype(logits.dtype)).astype(jnp.float32)


class Classifier(nn.Module):
  """Dropout then a linear layer to `classes` scores, on [B, D] or [B, T, D] inputs."""

  cfg: object  # ModelConfig
  classes: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    cfg = self.cfg
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    out = linear.Linear((cfg.d_model,), (self.classes,), ("embed", "labels"), use_bias=True,
                        kernel_init=linear.normal(cfg.init_std), dtype=jnp.dtype(cfg.dtype),
                        param_dtype=jnp.dtype(cfg.param_dtype), name="dense")(x)
    return out.astype(jnp.float32)


def best_span(start_BT: jax.Array, end_BT: jax.Array, valid_BT: jax.Array,
              max_len: int = 30) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(start, end, score) of the span a <= b < a + max_len maximising start[a] + end[b], both
  inside `valid_BT` (BERT section 4.2: "the maximum scoring span where j >= i")."""
  t = start_BT.shape[1]
  scores = start_BT[:, :, None].astype(jnp.float32) + end_BT[:, None, :].astype(jnp.float32)
  a = jnp.arange(t)[:, None]
  b = jnp.arange(t)[None, :]
  allowed = (b >= a) & (b - a < max_len)
  valid = valid_BT.astype(bool)
  allowed = allowed[None] & valid[:, :, None] & valid[:, None, :]
  flat = jnp.where(allowed, scores, -jnp.inf).reshape(scores.shape[0], -1)
  best = jnp.argmax(flat, axis=-1)
  return (best // t).astype(jnp.int32), (best % t).astype(jnp.int32), jnp.max(flat, axis=-1)
