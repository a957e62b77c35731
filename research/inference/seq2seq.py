"""Encode once, then cached decoding for encoder-decoder models, one jitted function per
(model, sampling).

    out = generate_seq2seq(model, params, input_ids, attention_mask, SamplingConfig(...))

The first decoder step (the start token) projects the encoder output into every decoder
layer's cross-attention keys/values; later steps reuse them and append one token's
self-attention keys/values. Inputs may be padded on either side (relative positions).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from research.inference.sampling import SamplingConfig, sample
from research.layers.kv_cache import EncoderDecoderCache


def generate_seq2seq(model, params, input_ids, attention_mask=None,
                     sampling: SamplingConfig | None = None, rng: jax.Array | None = None,
                     decoder_start_id: int = 0) -> jax.Array:
  """int32[B, max_new_tokens] outputs after the start token (T5's: the pad id, 0); positions
  after a stop token hold `sampling.pad_id`."""
  sampling = sampling or SamplingConfig()
  input_ids = jnp.asarray(input_ids, jnp.int32)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  rng = jax.random.key(sampling.seed) if rng is None else rng
  return _compiled(model, sampling, decoder_start_id)(
      params, input_ids, jnp.asarray(attention_mask, jnp.int32), rng)


@functools.lru_cache(maxsize=32)
def _compiled(model, sampling: SamplingConfig, decoder_start_id: int):
  cfg = model.cfg
  stop = jnp.asarray(sampling.stop_tokens or (-1,), jnp.int32)
  variables = lambda params: {"params": params}  # noqa: E731

  def run(params, input_ids, attention_mask, rng):
    batch = input_ids.shape[0]
    encoded, segment = model.apply(variables(params), input_ids=input_ids,
                                   attention_mask=attention_mask, method="encode")
    cache = EncoderDecoderCache.init(cfg, segment, sampling.max_new_tokens)
    start = jnp.full((batch, 1), decoder_start_id, jnp.int32)
    logits, cache = model.apply(variables(params), decoder_input_ids=start, encoded=encoded,
                                encoder_segment=segment, cache=cache, method="decode")
    rng, first_key = jax.random.split(rng)
    token = sample(logits[:, -1], first_key, sampling)
    done = jnp.isin(token, stop)

    def step(carry, key):
      token, cache, done = carry
      logits, cache = model.apply(variables(params), decoder_input_ids=token[:, None],
                                  encoded=None, encoder_segment=segment, cache=cache,
                                  method="decode")
      new = sample(logits[:, 0], key, sampling)
      new = jnp.where(done, sampling.pad_id, new)
      return (new, cache, done | jnp.isin(new, stop)), new

    keys = jax.random.split(rng, sampling.max_new_tokens - 1)
    _, rest = jax.lax.scan(step, (token, cache, done), keys)
    return jnp.concatenate([token[:, None], rest.T], axis=1)

  return jax.jit(run)
