"""research.layers.crf: the forward algorithm and Viterbi against brute-force enumeration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.layers import crf

L, T = 3, 5
# Masks with holes in the middle, a late start, an early end and nothing at all.
MASKS = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 0, 1, 0, 1], [0, 0, 0, 0, 0]], bool)


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  params = crf.CRFParams(transitions=jnp.asarray(rng.normal(size=(L, L)), jnp.float32),
                         start=jnp.asarray(rng.normal(size=L), jnp.float32),
                         end=jnp.asarray(rng.normal(size=L), jnp.float32))
  emissions = rng.normal(size=(len(MASKS), T, L)).astype(np.float32)
  return emissions, params


def _enumerate(emission, mask, params):
  """(log Z, best tags, best score) by enumerating every tagging of the valid positions."""
  p = jax.tree.map(np.asarray, params)
  positions = np.flatnonzero(mask)
  if len(positions) == 0:
    return 0.0, np.full(T, -1), 0.0
  scores = {}
  for tags in itertools.product(range(L), repeat=len(positions)):
    s = p.start[tags[0]] + p.end[tags[-1]] + sum(emission[q, y] for q, y in zip(positions, tags))
    s += sum(p.transitions[a, b] for a, b in zip(tags[:-1], tags[1:]))
    scores[tags] = s
  values = np.array(list(scores.values()))
  best = max(scores, key=scores.get)
  full = np.full(T, -1)
  full[positions] = best
  return float(np.log(np.exp(values - values.max()).sum()) + values.max()), full, scores[best]


@pytest.mark.parametrize("seed", [0, 1])
def test_partition_and_viterbi_equal_brute_force(seed):
  emissions, params = _problem(seed)
  log_z = np.asarray(crf.log_partition(emissions, MASKS, params))
  tags, best = map(np.asarray, crf.viterbi(emissions, MASKS, params))
  for b in range(len(MASKS)):
    want_z, want_tags, want_best = _enumerate(emissions[b], MASKS[b], params)
    np.testing.assert_allclose(log_z[b], want_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tags[b], want_tags)
    np.testing.assert_allclose(best[b], want_best, rtol=1e-5, atol=1e-5)


def test_likelihoods_are_a_distribution_and_the_best_path_scores_highest():
  emissions, params = _problem(2)
  b = 1  # holes at positions 1 and 4: three tagged positions
  positions = np.flatnonzero(MASKS[b])
  total = 0.0
  for tags in itertools.product(range(L), repeat=len(positions)):
    full = np.zeros(T, np.int32)
    full[positions] = tags
    total += float(np.exp(crf.log_likelihood(emissions[b:b + 1], full[None], MASKS[b:b + 1],
                                             params)[0]))
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)
  tags, best = crf.viterbi(emissions, MASKS, params)
  score = crf.sequence_score(emissions, jnp.maximum(tags, 0), MASKS, params)
  np.testing.assert_allclose(score, best, rtol=1e-5, atol=1e-5)


def test_transitions_matter_for_decoding():
  """A forbidding transition score changes the Viterbi path where per-token argmax would not."""
  emissions = np.zeros((1, 2, 2), np.float32)
  emissions[0, :, 1] = 1.0  # argmax: tag 1 twice
  params = crf.CRFParams(transitions=jnp.asarray([[0.0, 0.0], [0.0, -10.0]]),
                         start=jnp.zeros(2), end=jnp.zeros(2))
  tags, _ = crf.viterbi(emissions, np.ones((1, 2), bool), params)
  assert np.asarray(tags)[0].tolist() in ([0, 1], [1, 0])
