import jax
import numpy as np
import pytest

from research.models import registry
from support import forward, random_ids, tiny


def _logits(cfg, params=None, seed=0):
  params = params if params is not None else registry.init_params(cfg, jax.random.key(seed))
  return forward(cfg, params, random_ids((2, 10))), params


def test_parallel_and_serial_blocks_differ_with_the_same_weights():
  serial = tiny(norm="layernorm")
  parallel = serial.replace(parallel_block=True, parallel_norms=2)
  a, params = _logits(serial)
  b, _ = _logits(parallel, params)
  assert not np.allclose(a, b, atol=1e-3)


def test_parallel_shared_norm_has_one_norm_per_layer():
  one = registry.init_params(tiny(parallel_block=True, parallel_norms=1), jax.random.key(0))
  two = registry.init_params(tiny(parallel_block=True, parallel_norms=2), jax.random.key(0))
  assert "mlp_norm" not in one["blocks"]["layers"]
  assert "mlp_norm" in two["blocks"]["layers"]


def test_sandwich_adds_output_norms():
  layers = registry.init_params(tiny(norm_placement="sandwich"), jax.random.key(0))["blocks"]["layers"]
  assert {"attn_norm", "attn_out_norm", "mlp_norm", "mlp_out_norm"} <= set(layers)


@pytest.mark.parametrize("placement", ["pre", "post", "sandwich", "deepnorm"])
def test_final_norm_only_without_a_normalised_residual(placement):
  params = registry.init_params(tiny(norm_placement=placement), jax.random.key(0))
  assert ("final_norm" in params) == (placement in ("pre", "sandwich"))


def test_deepnorm_with_alpha_one_is_post_ln_and_alpha_matters():
  post = tiny(norm="layernorm", norm_placement="post")
  deep_one = post.replace(norm_placement="deepnorm", deepnorm_alpha=1.0)
  a, params = _logits(post)
  b, _ = _logits(deep_one, params)
  np.testing.assert_allclose(a, b, atol=1e-5)
  c, _ = _logits(post.replace(norm_placement="deepnorm"), params)
  assert not np.allclose(a, c, atol=1e-3)


def test_deepnorm_init_scales_value_output_and_ffn_by_beta():
  cfg = tiny(d_model=256, n_heads=4, n_layers=6, norm_placement="deepnorm", activation="gelu")
  _, beta = cfg.deepnorm()
  layers = registry.init_params(cfg, jax.random.key(0))["blocks"]["layers"]
  xavier = (2.0 / (256 + 256)) ** 0.5  # q: fan_in D=256, fan_out N*H=256
  assert np.std(layers["attn"]["q"]["kernel"]) == pytest.approx(xavier, rel=0.05)
  assert np.std(layers["attn"]["v"]["kernel"]) == pytest.approx(beta * xavier, rel=0.05)
  assert np.std(layers["attn"]["o"]["kernel"]) == pytest.approx(beta * xavier, rel=0.05)
  ffn = (2.0 / (256 + cfg.ffn_hidden)) ** 0.5
  assert np.std(layers["mlp"]["wi"]["kernel"]) == pytest.approx(beta * ffn, rel=0.05)


def test_gpt2_residual_init_is_scaled():
  cfg = tiny(d_model=256, n_heads=4, n_layers=8, scale_residual_init=True, activation="gelu")
  layers = registry.init_params(cfg, jax.random.key(0))["blocks"]["layers"]
  assert np.std(layers["attn"]["q"]["kernel"]) == pytest.approx(0.02, rel=0.05)
  assert np.std(layers["attn"]["o"]["kernel"]) == pytest.approx(0.02 / 4, rel=0.05)
  assert np.std(layers["mlp"]["wo"]["kernel"]) == pytest.approx(0.02 / 4, rel=0.05)
