"""The prefix_lm family (GLM): prefix mask at model level, 2D positions, cache, presets."""

import functools

import jax
import numpy as np
import pytest

from research import presets
from research.config import ModelConfig
from research.layers.kv_cache import KVCache
from research.models import registry
from research.models.registry import num_params


def tiny_glm(**overrides) -> ModelConfig:
  base = dict(family="prefix_lm", vocab_size=97, d_model=32, n_layers=2, n_heads=4,
              max_seq_len=64, position="rope", block_positions=True)
  base.update(overrides)
  return ModelConfig(**base)


@functools.lru_cache(maxsize=None)
def _setup(**overrides):
  cfg = tiny_glm(**overrides)
  model = registry.build(cfg)
  params = registry.init_params(cfg, jax.random.key(0))
  return cfg, model, params, jax.jit(lambda p, **kw: model.apply({"params": p}, **kw))


def _ids(t=8, seed=0):
  return np.random.default_rng(seed).integers(3, 97, (1, t)).astype(np.int32)


def _changed(forward, params, ids, position, **kw):
  """Per query position: whether changing the token at `position` changes its logits."""
  other = ids.copy()
  other[0, position] = (other[0, position] + 1) % 97
  diff = np.abs(np.asarray(forward(params, input_ids=other, **kw))
                - np.asarray(forward(params, input_ids=ids, **kw)))
  return diff.max(axis=-1)[0] > 1e-6


@pytest.mark.parametrize("overrides", [dict(), dict(position="learned"),
                                       dict(position="t5", block_positions=False)])
def test_model_is_bidirectional_in_the_prefix_and_causal_after(overrides):
  _, _, params, forward = _setup(**overrides)
  ids, prefix = _ids(), np.array([4], np.int32)
  # A prefix token reaches every query, those before it included.
  np.testing.assert_array_equal(_changed(forward, params, ids, 2, prefix_len=prefix), [True] * 8)
  # A token after the prefix reaches only itself and later queries.
  np.testing.assert_array_equal(_changed(forward, params, ids, 5, prefix_len=prefix),
                                [False] * 5 + [True] * 3)
  # No prefix: causal everywhere.
  np.testing.assert_array_equal(_changed(forward, params, ids, 2), [False] * 2 + [True] * 6)


def test_2d_rope_is_relative_in_both_ids_and_sees_the_block_ids():
  _, _, params, forward = _setup()
  ids = _ids()
  pos = np.array([[0, 1, 2, 3, 2, 2, 2, 1]], np.int32)
  block = np.array([[0, 0, 0, 0, 1, 2, 3, 1]], np.int32)
  prefix = np.array([4], np.int32)
  base = forward(params, input_ids=ids, position_ids=pos, block_position_ids=block,
                 prefix_len=prefix)
  # RoPE depends on differences only: shifting every id of either kind changes nothing.
  shifted = forward(params, input_ids=ids, position_ids=pos + 5, block_position_ids=block + 3,
                    prefix_len=prefix)
  np.testing.assert_allclose(shifted, base, atol=2e-5)
  # The block ids are used: numbering Part B's blocks differently changes its logits.
  other = forward(params, input_ids=ids, position_ids=pos, block_position_ids=np.zeros_like(block),
                  prefix_len=prefix)
  assert np.abs(np.asarray(other) - np.asarray(base))[0, 4:].max() > 1e-4


def test_learned_2d_positions_add_a_second_table():
  cfg, _, params, forward = _setup(position="learned")
  table = params["embed"]["block_positions"]["embedding"]
  assert table.shape == (cfg.max_seq_len, cfg.d_model)
  ids = _ids()
  base = forward(params, input_ids=ids)
  moved = forward(params, input_ids=ids, block_position_ids=np.ones_like(ids))
  assert np.abs(np.asarray(moved) - np.asarray(base)).max() > 1e-4


def test_cached_prefix_prefill_equals_the_uncached_forward():
  cfg, model, params, forward = _setup(n_kv_heads=2)
  ids = _ids(10)
  reference = np.asarray(forward(params, input_ids=ids, prefix_len=np.array([6], np.int32)))
  step = jax.jit(lambda p, x, c, prefix: model.apply({"params": p}, input_ids=x, cache=c,
                                                      prefix_len=prefix))
  cache = KVCache.init(cfg, 1, 10)
  logits, cache = step(params, ids[:, :6], cache, np.array([6], np.int32))
  outs = [logits]
  for t in range(6, 10):
    logits, cache = step(params, ids[:, t:t + 1], cache, None)
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), reference, atol=2e-5)


@pytest.mark.parametrize("name, rounded", [("chatglm-6b", 6.2e9), ("chatglm2-6b", 6.24e9),
                                           ("glm-small", 110e6)])
def test_presets_have_the_published_rounded_size(name, rounded):
  assert num_params(presets.get(name)) == pytest.approx(rounded, rel=0.01)


def test_chatglm_presets_keep_their_architecture():
  glm1, glm2 = presets.get("chatglm-6b"), presets.get("chatglm2-6b")
  assert glm1.deepnorm() == pytest.approx((56 ** 0.5, 56 ** -0.5))
  assert (glm1.norm_placement, glm1.activation) == ("deepnorm", "gelu_tanh")
  assert glm1.block_positions
  assert not glm1.has_final_norm and glm1.embed_norm
  assert (glm2.norm, glm2.norm_placement, glm2.activation, glm2.num_kv_heads) == (
      "rmsnorm", "pre", "swiglu", 2)
  assert glm2.rope_dims == 64


@pytest.mark.parametrize("changes, needle", [
    (dict(family="decoder"), "block_positions=True only applies to family='prefix_lm'"),
    (dict(position="alibi"), "block_positions=True needs position 'learned' or 'rope'"),
    (dict(rope_fraction=0.25), "rope_dims must be divisible by 4"),  # 8 dims * 0.25 = 2
    (dict(block_positions=False, position="alibi"), "position='alibi' is not supported"),
])
def test_invalid_prefix_lm_configs_are_named(changes, needle):
  with pytest.raises(ValueError) as err:
    tiny_glm(**changes)
  assert needle in str(err.value)
