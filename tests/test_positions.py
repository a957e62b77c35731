import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.layers import positions as pos_lib
from support import tiny


def _score(q, k, m, n, inv_freq):
  qr = pos_lib.apply_rope(q, jnp.array([[m]]), inv_freq)
  kr = pos_lib.apply_rope(k, jnp.array([[n]]), inv_freq)
  return float(jnp.sum(qr * kr))


@pytest.mark.parametrize("scaling", ["none", "linear", "llama3"])
@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_rope_scores_depend_only_on_relative_position(scaling, fraction):
  cfg = tiny(d_model=64, n_heads=2, rope_fraction=fraction, rope_scaling=scaling,
             rope_scaling_factor=4.0, rope_original_max_len=16)
  inv_freq = pos_lib.rope_inv_freq(cfg)
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 32))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 32))
  base = _score(q, k, 7, 3, inv_freq)
  assert _score(q, k, 107, 103, inv_freq) == pytest.approx(base, rel=1e-4, abs=1e-4)
  assert _score(q, k, 11, 7, inv_freq) == pytest.approx(base, rel=1e-4, abs=1e-4)
  assert _score(q, k, 7, 4, inv_freq) != pytest.approx(base, rel=1e-3)


def test_rope_partial_leaves_tail_dims_and_norm():
  cfg = tiny(d_model=64, n_heads=2, rope_fraction=0.25)
  x = jax.random.normal(jax.random.key(0), (1, 5, 2, 32))
  y = pos_lib.apply_rope(x, jnp.arange(5)[None], pos_lib.rope_inv_freq(cfg))
  np.testing.assert_array_equal(y[..., 8:], x[..., 8:])
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(y[:, 0], x[:, 0], rtol=1e-6)  # position 0 is the identity


def test_rope_linear_scaling_is_position_interpolation():
  plain = tiny(d_model=64, n_heads=2)
  scaled = tiny(d_model=64, n_heads=2, rope_scaling="linear", rope_scaling_factor=4.0)
  x = jax.random.normal(jax.random.key(0), (1, 1, 2, 32))
  a = pos_lib.apply_rope(x, jnp.array([[12]]), pos_lib.rope_inv_freq(scaled))
  b = pos_lib.apply_rope(x, jnp.array([[3]]), pos_lib.rope_inv_freq(plain))
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_llama3_scaling_keeps_high_and_divides_low_frequencies():
  plain = pos_lib.rope_inv_freq(tiny(d_model=256, n_heads=2, rope_theta=500000.0))
  cfg = tiny(d_model=256, n_heads=2, rope_theta=500000.0, rope_scaling="llama3",
             rope_scaling_factor=8.0, rope_original_max_len=8192)
  scaled = pos_lib.rope_inv_freq(cfg)
  wavelen = 2 * np.pi / plain
  high = wavelen < 8192 / 4.0
  low = wavelen > 8192 / 1.0
  np.testing.assert_allclose(scaled[high], plain[high], rtol=1e-6)
  np.testing.assert_allclose(scaled[low], plain[low] / 8.0, rtol=1e-6)
  assert high.any() and low.any()


def test_alibi_slopes_power_of_two_and_not():
  np.testing.assert_allclose(pos_lib.alibi_slopes(8), [2.0 ** -i for i in range(1, 9)])
  # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence.
  expected = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
  np.testing.assert_allclose(pos_lib.alibi_slopes(6), expected)


def test_alibi_slopes_match_bloom():
  torch = pytest.importorskip("torch")
  from transformers.models.bloom.modeling_bloom import build_alibi_tensor

  for heads in (4, 12, 16, 71):
    alibi = build_alibi_tensor(torch.ones(1, 2), heads, torch.float32)  # [heads, 1, 2]
    np.testing.assert_allclose(pos_lib.alibi_slopes(heads), alibi[:, 0, 1].numpy(), rtol=1e-6)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_transformers(bidirectional):
  torch = pytest.importorskip("torch")
  from transformers.models.t5.modeling_t5 import T5Attention

  rel = np.arange(-300, 301)
  ref = T5Attention._relative_position_bucket(
      torch.tensor(rel), bidirectional=bidirectional, num_buckets=32, max_distance=128).numpy()
  ours = pos_lib.relative_position_bucket(
      jnp.asarray(rel), bidirectional=bidirectional, num_buckets=32, max_distance=128)
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_sinusoidal_matches_the_paper():
  pe = pos_lib.sinusoidal(jnp.array([[0, 5]]), 8)
  i = np.arange(4)
  np.testing.assert_allclose(pe[0, 1, 0::2], np.sin(5 / 10000 ** (2 * i / 8)), rtol=1e-6)
  np.testing.assert_allclose(pe[0, 1, 1::2], np.cos(5 / 10000 ** (2 * i / 8)), rtol=1e-6)
  np.testing.assert_allclose(pe[0, 0, 1::2], 1.0)
