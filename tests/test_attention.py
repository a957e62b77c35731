import jax
import jax.numpy as jnp
import numpy as np

from research.layers import attention_backends
from research.layers.masks import AttentionMask, segment_positions
from research.models import registry
from support import forward, random_ids, tiny


def _full_mask(b, t, **kw):
  idx = jnp.broadcast_to(jnp.arange(t), (b, t))
  seg = jnp.ones((b, t), jnp.int32)
  return AttentionMask(q_index=idx, k_index=idx, q_segment=seg, k_segment=seg, **kw)


def test_gqa_equals_mha_with_repeated_kv_heads():
  gqa = tiny(n_heads=4, n_kv_heads=2)
  mha = tiny(n_heads=4, n_kv_heads=4)
  params = registry.init_params(gqa, jax.random.key(0))
  group = gqa.n_heads // gqa.num_kv_heads

  def repeat_kv(path, x):
    names = [getattr(p, "key", None) for p in path]
    if names[-2:] in (["k", "kernel"], ["v", "kernel"]):
      return jnp.repeat(x, group, axis=-2)  # [L, D, K, H] -> [L, D, N, H], head n uses kv n // G
    return x

  mha_params = jax.tree_util.tree_map_with_path(repeat_kv, params)
  ids = random_ids((2, 12))
  np.testing.assert_allclose(forward(gqa, params, ids), forward(mha, mha_params, ids), atol=1e-5)


def test_mqa_stores_one_kv_head():
  params = registry.init_params(tiny(n_kv_heads=1), jax.random.key(0))
  assert params["blocks"]["layers"]["attn"]["k"]["kernel"].shape == (2, 32, 1, 8)


def test_padding_query_rows_are_finite():
  q = jax.random.normal(jax.random.key(0), (1, 4, 2, 8))
  mask = _full_mask(1, 4).replace(q_segment=jnp.array([[0, 1, 1, 1]]), k_segment=jnp.array([[0, 1, 1, 1]]))
  out, probs = attention_backends.xla_attention(q, q, q, mask, None, scale=0.3)
  assert np.isfinite(np.asarray(out)).all()
  np.testing.assert_allclose(probs[0, :, 1:, 0], 0.0)  # padding key never receives weight


def test_sliding_window_limits_the_lookback():
  mask = _full_mask(1, 6, causal=True, window=2).tile()[0]
  expected = np.array([[abs(i - j) < 2 and j <= i for j in range(6)] for i in range(6)])
  np.testing.assert_array_equal(np.asarray(mask), expected)


def test_prefix_lm_mask_is_bidirectional_in_the_prefix():
  mask = _full_mask(1, 5, causal=True).replace(prefix_len=jnp.array([3])).tile()[0]
  expected = np.array([[j < 3 or j <= i for j in range(5)] for i in range(5)])
  np.testing.assert_array_equal(np.asarray(mask), expected)


def test_segment_positions_restart_per_segment_and_skip_left_padding():
  seg = jnp.array([[1, 1, 1, 2, 2, 0], [0, 0, 1, 1, 1, 1]])
  pos = np.asarray(segment_positions(seg))
  np.testing.assert_array_equal(pos[0, :5], [0, 1, 2, 0, 1])
  np.testing.assert_array_equal(pos[1, 2:], [0, 1, 2, 3])


def test_sliding_window_changes_logits_only_beyond_the_window():
  cfg = tiny(sliding_window=4)
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((1, 10))
  windowed = forward(cfg, params, ids)
  full = forward(cfg.replace(sliding_window=None), params, ids)
  np.testing.assert_allclose(windowed[:, :4], full[:, :4], atol=1e-6)
  assert not np.allclose(windowed[:, 6:], full[:, 6:], atol=1e-4)
