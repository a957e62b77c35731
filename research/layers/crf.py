"""Linear-chain conditional random field (Lafferty et al. 2001) over per-token emissions.

A tag sequence y_1..y_n of a sequence with emissions e_t (scores of each tag at token t) scores

    s(y) = start[y_1] + sum_t e_t[y_t] + sum_{t>1} trans[y_{t-1}, y_t] + end[y_n]

and p(y | x) = exp(s(y)) / Z with Z = sum over all L^n sequences, which the forward algorithm
computes in O(n L^2) (Rabiner 1989 for the recursion; Lample et al. 2016 put it on top of
neural emissions for NER). Viterbi decoding replaces the log-sum-exp by a max.

`mask` 0 removes a position from the chain: the positions around it are linked directly by one
transition. So padding, and sub-word pieces that carry no label, need no special handling;
a sequence with no valid position has score 0 and log Z = 0. Einsum letters: B batch,
T tokens, L tags.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class CRFParams:
  transitions: jax.Array  # float32[L, L]: from tag i (row) to tag j (column)
  start: jax.Array  # float32[L]
  end: jax.Array  # float32[L]


class CRF(nn.Module):
  """The learned transition, start and end scores; zero-initialised (independent tags)."""

  num_tags: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self) -> CRFParams:
    def param(name, shape, axes):
      return self.param(
          name, nn.with_logical_partitioning(nn.initializers.zeros, axes), shape, self.param_dtype)

    return CRFParams(
        transitions=param("transitions", (self.num_tags, self.num_tags), ("labels", "labels")),
        start=param("start", (self.num_tags,), ("labels",)),
        end=param("end", (self.num_tags,), ("labels",)))


def _f32(params: CRFParams) -> CRFParams:
  return jax.tree.map(lambda a: a.astype(jnp.float32), params)


def log_partition(emissions_BTL: jax.Array, mask_BT: jax.Array, params: CRFParams) -> jax.Array:
  """log Z for each sequence: float32[B], by the forward algorithm."""
  p = _f32(params)
  emissions = emissions_BTL.astype(jnp.float32)
  b, _, n_tags = emissions.shape

  def step(carry, xs):
    alpha_BL, started_B = carry
    emit_BL, valid_B = xs
    moved = jax.nn.logsumexp(alpha_BL[:, :, None] + p.transitions[None], axis=1) + emit_BL
    entered = p.start[None] + emit_BL
    new = jnp.where(started_B[:, None], moved, entered)
    alpha_BL = jnp.where(valid_B[:, None], new, alpha_BL)
    return (alpha_BL, started_B | valid_B), None

  init = (jnp.zeros((b, n_tags), jnp.float32), jnp.zeros((b,), bool))
  (alpha, started), _ = jax.lax.scan(
      step, init, (jnp.moveaxis(emissions, 1, 0), jnp.moveaxis(mask_BT.astype(bool), 1, 0)))
  return jnp.where(started, jax.nn.logsumexp(alpha + p.end[None], axis=-1), 0.0)


def sequence_score(emissions_BTL: jax.Array, tags_BT: jax.Array, mask_BT: jax.Array,
                   params: CRFParams) -> jax.Array:
  """s(y) of the given tags: float32[B] (tags at masked positions are ignored)."""
  p = _f32(params)
  emissions = emissions_BTL.astype(jnp.float32)
  valid = mask_BT.astype(bool)
  tags = jnp.where(valid, tags_BT, 0).astype(jnp.int32)
  b = tags.shape[0]

  def step(carry, xs):
    score_B, prev_B, started_B = carry
    emit_BL, tag_B, valid_B = xs
    emit = jnp.take_along_axis(emit_BL, tag_B[:, None], axis=1)[:, 0]
    link = jnp.where(started_B, p.transitions[prev_B, tag_B], p.start[tag_B])
    score_B = score_B + jnp.where(valid_B, emit + link, 0.0)
    prev_B = jnp.where(valid_B, tag_B, prev_B)
    return (score_B, prev_B, started_B | valid_B), None

  init = (jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32), jnp.zeros((b,), bool))
  (score, last, started), _ = jax.lax.scan(
      step, init, (jnp.moveaxis(emissions, 1, 0), tags.T, valid.T))
  return score + jnp.where(started, p.end[last], 0.0)


def log_likelihood(emissions_BTL: jax.Array, tags_BT: jax.Array, mask_BT: jax.Array,
                   params: CRFParams) -> jax.Array:
  """log p(tags | emissions) = s(tags) - log Z: float32[B]."""
  return (sequence_score(emissions_BTL, tags_BT, mask_BT, params)
          - log_partition(emissions_BTL, mask_BT, params))


def viterbi(emissions_BTL: jax.Array, mask_BT: jax.Array,
            params: CRFParams) -> tuple[jax.Array, jax.Array]:
  """The highest-scoring tags int32[B, T] (-1 at masked positions) and their scores float32[B]."""
  p = _f32(params)
  emissions = emissions_BTL.astype(jnp.float32)
  valid = mask_BT.astype(bool)
  b, _, n_tags = emissions.shape
  identity = jnp.broadcast_to(jnp.arange(n_tags, dtype=jnp.int32), (b, n_tags))

  def forward(carry, xs):
    delta_BL, started_B = carry
    emit_BL, valid_B = xs
    candidates = delta_BL[:, :, None] + p.transitions[None]  # [B, from, to]
    moved = candidates.max(axis=1) + emit_BL
    back = jnp.where(started_B[:, None], candidates.argmax(axis=1).astype(jnp.int32), identity)
    new = jnp.where(started_B[:, None], moved, p.start[None] + emit_BL)
    delta_BL = jnp.where(valid_B[:, None], new, delta_BL)
    # A masked position passes every tag through unchanged.
    back = jnp.where(valid_B[:, None], back, identity)
    return (delta_BL, started_B | valid_B), back

  init = (jnp.zeros((b, n_tags), jnp.float32), jnp.zeros((b,), bool))
  (delta, started), backs_TBL = jax.lax.scan(
      forward, init, (jnp.moveaxis(emissions, 1, 0), valid.T))
  final = delta + p.end[None]
  last = final.argmax(axis=-1).astype(jnp.int32)

  def backward(tag_B, back_BL):
    # The tag at this position is tag_B; the pointer gives the tag at the previous position.
    return jnp.take_along_axis(back_BL, tag_B[:, None], axis=1)[:, 0], tag_B

  _, tags_TB = jax.lax.scan(backward, last, backs_TBL, reverse=True)
  tags = jnp.where(valid, tags_TB.T, -1)
  return tags, jnp.where(started, final.max(axis=-1), 0.0)
