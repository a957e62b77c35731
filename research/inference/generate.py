"""Prefill + cached decode for decoder models, one jitted function per (model, sampling).

Prompts are left-padded (`left_pad`) so every row's last prompt token sits in the last
column; padding is masked out of attention and does not advance positions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.inference.sampling import (SamplingConfig, mark_seen, row_keys, sample, seen_tokens,
                                         step_keys)
from research.layers.kv_cache import KVCache
from research.layers.stack import loop_form


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and attention mask, both int32[B, longest prompt], padded on the left."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  width = max(len(p) for p in prompts)
  ids = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for row, p in enumerate(prompts):
    ids[row, width - len(p):] = p
    mask[row, width - len(p):] = 1
  return ids, mask


def generate(model, params, input_ids, attention_mask=None, sampling: SamplingConfig | None = None,
             rng: jax.Array | None = None, seeds: Sequence[int] | None = None) -> jax.Array:
  """int32[B, max_new_tokens] continuations; positions after a stop token hold pad_id.

  `seeds` gives each row its own seed (see research.inference.sampling); `rng` replaces
  key(sampling.seed) as the key the rows' keys are folded from.
  """
  sampling = sampling or SamplingConfig()
  cfg = model.cfg
  input_ids = jnp.asarray(input_ids, jnp.int32)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  total = input_ids.shape[1] + sampling.max_new_tokens
  if cfg.position == "learned" and total > cfg.max_seq_len:
    raise ValueError(
        f"prompt ({input_ids.shape[1]}) + max_new_tokens ({sampling.max_new_tokens}) = {total} "
        f"exceeds the learned position table (max_seq_len={cfg.max_seq_len})")
  batch = input_ids.shape[0]
  if rng is not None:
    keys = jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(batch))
  else:
    keys = row_keys(sampling, batch, seeds)
  return _compiled(model, sampling)(params, input_ids, jnp.asarray(attention_mask, jnp.int32), keys)


@functools.lru_cache(maxsize=32)
def _compiled(model, sampling: SamplingConfig):
  cfg = model.cfg
  stop = jnp.asarray(sampling.stop_tokens or (-1,), jnp.int32)
  scanned = model

  def run(params, input_ids, attention_mask, keys):
    # Once per call, before the token loop: each layer's weights in arrays of their own.
    model, params = loop_form(scanned, params)
    batch, prompt_len = input_ids.shape
    cache = KVCache.init(cfg, batch, prompt_len + sampling.max_new_tokens)
    # Left-padded: every row's last prompt token is in the last column.
    logits, cache = model.apply({"params": params}, input_ids=input_ids,
                                attention_mask=attention_mask, cache=cache, last_only=True)
    seen = seen_tokens(input_ids, attention_mask, logits.shape[-1]) if sampling.tracks_tokens else None
    token = sample(logits[:, -1], step_keys(keys, 0), sampling, seen)
    done = jnp.isin(token, stop)

    def step(carry, t):
      token, cache, done, seen = carry
      if seen is not None:
        seen = mark_seen(seen, token)
      logits, cache = model.apply({"params": params}, input_ids=token[:, None], cache=cache)
      new = sample(logits[:, 0], step_keys(keys, t), sampling, seen)
      new = jnp.where(done, sampling.pad_id, new)
      return (new, cache, done | jnp.isin(new, stop), seen), new

    steps = jnp.arange(1, sampling.max_new_tokens)
    _, rest = jax.lax.scan(step, (token, cache, done, seen), steps)
    return jnp.concatenate([token[:, None], rest.T], axis=1)

  return jax.jit(run)
