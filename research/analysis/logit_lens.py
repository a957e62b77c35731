"""The logit lens (nostalgebraist 2020): read each layer's residual stream as a prediction by
passing it through the model's own final norm and unembedding.

    lens = logit_lens(trace, params)
    lens.logits       [L+1, B, T, V]  layer 0 is the embeddings; layer L equals the model's logits
    lens.top_tokens   [L+1, B, T]     each layer's most likely next token
    lens.top_prob     [L+1, B, T]
    lens.loss         [L+1]           mean next-token cross-entropy (when targets are given)
    lens.kl_to_final  [L+1]           mean KL(final || layer): how far each layer is from the output

Post-LN and DeepNorm stacks have no final norm: their block outputs are already normalised,
and the lens applies the unembedding alone, exactly as the model does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from research.analysis.capture import Trace
from research.layers import linear, norms


@dataclasses.dataclass(frozen=True)
class Lens:
  logits: np.ndarray  # [L+1, B, T, V]
  top_tokens: np.ndarray  # [L+1, B, T]
  top_prob: np.ndarray  # [L+1, B, T]
  loss: np.ndarray | None  # [L+1]
  kl_to_final: np.ndarray  # [L+1]


def unembed(cfg, params, x_BTD: jax.Array) -> jax.Array:
  """float32 logits of hidden states `x`: the final norm (if the model has one), then the tied
  embedding or the `lm_head`, with the model's own modules and parameters."""
  dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
  if cfg.has_final_norm:
    x_BTD = norms.make_norm(cfg, "final_norm").apply({"params": params["final_norm"]}, x_BTD)
  if cfg.tie_embeddings:
    embed = linear.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, param_dtype=pdtype)
    logits = embed.apply({"params": params["embed"]["tokens"]}, x_BTD, method="attend")
  else:
    head = linear.Linear((cfg.d_model,), (cfg.vocab_size,), ("embed", "vocab"), dtype=dtype,
                         param_dtype=pdtype)
    logits = head.apply({"params": params["lm_head"]}, x_BTD)
  return logits.astype(jnp.float32)


@functools.lru_cache(maxsize=16)
def _unembed_fn(cfg):
  return jax.jit(lambda params, x: unembed(cfg, params, x))


def logit_lens(trace: Trace, params, targets=None) -> Lens:
  """Each layer's logits; `targets` [B, T] (default: the inputs shifted left) give the loss."""
  fn = _unembed_fn(trace.cfg)
  logits = np.stack([np.asarray(fn(params, x)) for x in trace.stream])
  log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
  final = log_probs[-1]
  kl = (np.exp(final)[None] * (final[None] - log_probs)).sum(-1)  # [L+1, B, T]
  valid = trace.valid.astype(np.float64)
  if targets is None:
    targets = np.concatenate([trace.input_ids[:, 1:], trace.input_ids[:, -1:]], axis=1)
    weight = valid * np.concatenate([valid[:, 1:], np.zeros_like(valid[:, :1])], axis=1)
  else:
    targets = np.asarray(targets)
    weight = valid
  nll = -np.take_along_axis(log_probs, targets[None, :, :, None], axis=-1)[..., 0]
  denom = max(weight.sum(), 1.0)
  return Lens(
      logits=logits,
      top_tokens=logits.argmax(-1),
      top_prob=np.exp(log_probs.max(-1)),
      loss=(nll * weight).sum(axis=(1, 2)) / denom if weight.sum() else None,
      kl_to_final=(kl * valid).sum(axis=(1, 2)) / max(valid.sum(), 1.0),
  )
