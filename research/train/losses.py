"""What every objective's loss shares: running the model (with its mixture-of-experts router
losses) and the weighted next-token cross-entropy.

research.train.objectives (the decoder and encoder-decoder objectives, and the registry) and
research.train.encoder_objectives both build their losses on these.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from research.layers import moe


def apply_model(model, params, rng, deterministic: bool, **inputs):
  """Runs the model; returns (logits, auxiliary loss to add, extra metrics).

  Mixture-of-experts layers sow their weighted router losses and load metrics into the
  "moe" collection; they are summed over layers here and added to every objective's loss.
  """
  rngs = {"dropout": rng} if rng is not None else {}
  if not getattr(model.cfg, "moe_experts", 0):
    logits = model.apply({"params": params}, deterministic=deterministic, rngs=rngs, **inputs)
    return logits, jnp.zeros((), jnp.float32), {}
  logits, state = model.apply({"params": params}, deterministic=deterministic, rngs=rngs,
                              mutable=[moe.COLLECTION], **inputs)
  aux, metrics = moe.collect_moe_metrics(state[moe.COLLECTION])
  return logits, aux, metrics


def _max_and_argmax(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(max, argmax) over the last axis in one variadic reduction, ties to the lower index and
  NaN first, as `jnp.argmax` breaks them (jax's own argmax reduction, returning the value too)."""
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)

  def first_best(a, b):
    (a_value, a_index), (b_value, b_index) = a, b
    take_a = (a_value > b_value) | (a_value != a_value)
    take_a_index = take_a | ((a_value == b_value) & (a_index < b_index))
    return (jax.lax.select(take_a, a_value, b_value),
            jax.lax.select(take_a_index, a_index, b_index))

  init = (jnp.array(-jnp.inf, x.dtype), jnp.array(0, jnp.int32))
  return jax.lax.reduce((x, index), init, first_best, (x.ndim - 1,))


def token_cross_entropy(logits, targets, weights):
  """Sum of weighted next-token cross-entropies, total weight, and weighted correct count.

  A position is correct when the argmax is the target, a tie going to the first index as in
  `jnp.argmax` (so all-equal logits are right only for target 0, not everywhere). One
  (max, argmax) reduction and one sum run over the vocabulary: the argmax's value is the
  log-softmax's max, so the argmax costs no pass of its own over the [B, T, V] logits.
  """
  logits = logits.astype(jnp.float32)
  peak, predicted = _max_and_argmax(jax.lax.stop_gradient(logits))
  shifted = logits - peak[..., None]
  target = jnp.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
  ce = jnp.log(jnp.exp(shifted).sum(axis=-1)) - target
  weights = weights.astype(jnp.float32)
  correct = (predicted == targets).astype(jnp.float32)
  return (ce * weights).sum(), weights.sum(), (correct * weights).sum()
