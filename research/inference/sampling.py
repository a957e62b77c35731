"""Next-token sampling: greedy, temperature, top-k (Fan et al. 2018), top-p (Holtzman et al. 2020)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from research.config import validate


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""

  max_new_tokens: int = 32
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  stop_tokens: tuple[int, ...] = ()
  pad_id: int = 0
  seed: int = 0
  # Ids at or above this are never sampled: a model's vocabulary is often padded past its
  # tokenizer's (to a multiple of 64 or 128), and those rows mean nothing.
  vocab_limit: int | None = None

  def __post_init__(self):
    own = type(self).__name__
    validate.positive(own, "max_new_tokens", self.max_new_tokens)
    validate.positive(own, "temperature", self.temperature, allow_zero=True)
    validate.positive(own, "top_k", self.top_k, allow_zero=True)
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"{own}.top_p={self.top_p!r} must lie in (0, 1]")


def filter_logits(logits_BV: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Sets logits outside the top-k and outside the top-p nucleus to -inf."""
  logits_BV = logits_BV.astype(jnp.float32)
  if top_k > 0:
    kth = jax.lax.top_k(logits_BV, min(top_k, logits_BV.shape[-1]))[0][..., -1:]
    logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
  if top_p < 1.0:
    sorted_desc = jnp.sort(logits_BV, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before
    # it is still below top_p (so the most likely token always stays).
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.where(mass_before < top_p, sorted_desc, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    logits_BV = jnp.where(logits_BV < threshold, -jnp.inf, logits_BV)
  return logits_BV


def sample(logits_BV: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """One token per row of logits."""
  if cfg.vocab_limit is not None:
    logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < cfg.vocab_limit, logits_BV, -jnp.inf)
  if cfg.temperature == 0.0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = filter_logits(logits_BV / cfg.temperature, cfg.top_k, cfg.top_p)
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)
