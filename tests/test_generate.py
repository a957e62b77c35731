import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.inference.generate import generate, left_pad
from research.inference.sampling import SamplingConfig, filter_logits, greedy, sample
from research.layers.kv_cache import KVCache
from research.layers.stack import loop_form
from research.models import registry
from support import forward, random_ids, tiny

FAMILIES = {
    "llama_gqa": dict(n_kv_heads=2),
    "gpt2": dict(position="learned", norm="layernorm", activation="gelu_tanh"),
    "bloom": dict(position="alibi", embed_norm=True),
    "falcon_mqa_parallel": dict(n_kv_heads=1, parallel_block=True),
    "mistral_window": dict(n_kv_heads=2, sliding_window=5),
    "t5bias": dict(position="t5"),
    "mixtral_moe": dict(n_kv_heads=2, moe_experts=4, moe_softmax_after_topk=True, moe_dropless=True),
    # Capacity routing that cannot drop (capacity = sequence length), every second layer.
    "moe_every_2": dict(moe_experts=4, moe_every=2, moe_capacity_factor=2.0),
}


@pytest.mark.parametrize("loop", [False, True], ids=["scanned", "loop_form"])
@pytest.mark.parametrize("name", FAMILIES)
def test_cached_logits_equal_the_uncached_forward(name, loop):
  cfg = tiny(**FAMILIES[name])
  params = registry.init_params(cfg, jax.random.key(0))
  reference_params = params
  model = registry.build(cfg)
  if loop:  # what generate and the engine decode with: unstacked weights, the cache in place
    model, params = loop_form(model, params)
    assert not model.cfg.scan_layers and "layers_0" in params["blocks"]
  ids, mask = left_pad([list(range(3, 9)), list(range(10, 13))])
  full_ids = np.concatenate([ids, random_ids((2, 5), seed=3)], axis=1)
  full_mask = np.concatenate([mask, np.ones((2, 5), np.int32)], axis=1)
  reference = forward(cfg, reference_params, full_ids, attention_mask=full_mask)

  step = jax.jit(lambda p, x, m, c: model.apply({"params": p}, input_ids=x, attention_mask=m, cache=c))
  cache = KVCache.init(cfg, 2, full_ids.shape[1])
  logits, cache = step(params, ids, mask, cache)
  outs = [logits]
  for t in range(ids.shape[1], full_ids.shape[1]):
    logits, cache = step(params, full_ids[:, t:t + 1], np.ones((2, 1), np.int32), cache)
    outs.append(logits)
  cached = np.concatenate(outs, axis=1)
  real = full_mask.astype(bool)
  np.testing.assert_allclose(cached[real], np.asarray(reference)[real], atol=2e-5)


@pytest.mark.parametrize("name", ["llama_gqa", "bloom"])
def test_greedy_generation_equals_argmax_of_full_forwards(name):
  cfg = tiny(**FAMILIES[name])
  params = registry.init_params(cfg, jax.random.key(0))
  ids, mask = left_pad([[5, 6, 7, 8], [9, 10]])
  out = np.asarray(generate(registry.build(cfg), params, ids, mask, SamplingConfig(max_new_tokens=6)))
  width = ids.shape[1] + 6  # one shape, one compilation: the causal logits at the last real
  for row in range(2):      # token do not see the right padding after it
    seq = [int(t) for t, m in zip(ids[row], mask[row]) if m]
    for _ in range(6):
      padded = np.zeros((1, width), np.int32)
      padded[0, :len(seq)] = seq
      seq.append(int(np.argmax(forward(cfg, params, padded)[0, len(seq) - 1])))
    assert out[row].tolist() == seq[-6:]


def test_stop_tokens_end_a_row_with_padding():
  cfg = tiny()
  params = registry.init_params(cfg, jax.random.key(0))
  model = registry.build(cfg)
  ids, mask = left_pad([[1, 2, 3]])
  free = np.asarray(generate(model, params, ids, mask, SamplingConfig(max_new_tokens=8)))[0]
  stop = int(free[2])
  stopped = np.asarray(generate(model, params, ids, mask, SamplingConfig(
      max_new_tokens=8, stop_tokens=(stop,), pad_id=-1)))[0]
  first = list(free).index(stop)
  assert stopped[: first + 1].tolist() == free[: first + 1].tolist()
  assert (stopped[first + 1:] == -1).all()


def test_sampling_is_seeded_and_respects_top_k():
  cfg = tiny()
  params = registry.init_params(cfg, jax.random.key(0))
  model = registry.build(cfg)
  ids, mask = left_pad([[1, 2, 3], [4, 5, 6]])
  s = SamplingConfig(max_new_tokens=10, temperature=1.0, top_k=5, seed=7)
  a = np.asarray(generate(model, params, ids, mask, s))
  np.testing.assert_array_equal(a, generate(model, params, ids, mask, s))
  assert not np.array_equal(a, generate(model, params, ids, mask, SamplingConfig(
      max_new_tokens=10, temperature=1.0, top_k=5, seed=8)))
  greedy = generate(model, params, ids, mask, SamplingConfig(max_new_tokens=10))
  np.testing.assert_array_equal(greedy, generate(model, params, ids, mask, SamplingConfig(
      max_new_tokens=10, temperature=1.0, top_k=1, seed=3)))


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
  assert np.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [[False, True, False, True]]
  assert np.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [[False, True, False, True]]
  assert np.isfinite(filter_logits(logits, 0, 0.85)).tolist() == [[False, True, True, True]]
  assert np.isfinite(filter_logits(logits, 0, 0.01)).tolist() == [[False, True, False, False]]


def test_temperature_sampling_follows_the_distribution():
  probs = np.array([0.1, 0.6, 0.3])
  logits = jnp.log(jnp.asarray(np.tile(probs, (20000, 1))))
  draws = sample(logits, jax.random.key(0), SamplingConfig(temperature=1.0))
  freq = np.bincount(np.asarray(draws), minlength=3) / 20000
  np.testing.assert_allclose(freq, probs, atol=0.015)


def test_learned_positions_refuse_overlong_generation():
  cfg = tiny(position="learned", max_seq_len=16)
  params = registry.init_params(cfg, jax.random.key(0))
  with pytest.raises(ValueError, match="max_seq_len=16"):
    generate(registry.build(cfg), params, np.ones((1, 10), np.int32), sampling=SamplingConfig(max_new_tokens=8))


def test_vocab_limit_masks_padded_vocabulary_rows():
  logits = jnp.array([[0.0, 1.0, 9.0, 8.0]])
  assert int(sample(logits, jax.random.key(0), SamplingConfig())[0]) == 2
  assert int(sample(logits, jax.random.key(0), SamplingConfig(vocab_limit=2))[0]) == 1
  draws = sample(jnp.tile(logits, (500, 1)), jax.random.key(0), SamplingConfig(temperature=5.0, vocab_limit=2))
  assert set(np.asarray(draws).tolist()) <= {0, 1}


def test_greedy_is_argmax_with_its_first_index_tie_break():
  logits = jax.random.normal(jax.random.key(0), (6, 1000))
  logits = logits.at[1, 7].set(9.0).at[1, 500].set(9.0)  # a tie: the first index wins
  logits = logits.at[2].set(-jnp.inf).at[2, 999].set(0.0)
  logits = logits.at[3].set(1.0)  # all equal
  np.testing.assert_array_equal(greedy(logits), jnp.argmax(logits, axis=-1))
  assert greedy(logits)[1] == 7 and greedy(logits)[3] == 0


def test_last_only_is_the_last_column_of_the_full_logits():
  cfg = tiny(n_kv_heads=2)
  params = registry.init_params(cfg, jax.random.key(0))
  model = registry.build(cfg)
  ids, mask = left_pad([list(range(3, 9)), list(range(10, 13))])
  cache = KVCache.init(cfg, 2, ids.shape[1] + 1)
  full, _ = model.apply({"params": params}, input_ids=ids, attention_mask=mask, cache=cache)
  last, _ = model.apply({"params": params}, input_ids=ids, attention_mask=mask, cache=cache,
                        last_only=True)
  assert last.shape == (2, 1, cfg.vocab_size)
  np.testing.assert_allclose(last, full[:, -1:], atol=1e-6)
