import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.layers.stack import stack_layers, unstack_layers
from research.models import registry
from support import forward, random_ids, tiny

VARIANTS = {
    "llama": {},
    "gpt2": dict(position="learned", norm="layernorm", norm_bias=True, activation="gelu_tanh",
                 qkv_bias=True, out_bias=True, mlp_bias=True),
    "bloom": dict(position="alibi", embed_norm=True, norm="layernorm"),
    "neox": dict(parallel_block=True, parallel_norms=2, rope_fraction=0.25, norm="layernorm"),
    "t5bias_post": dict(position="t5", norm_placement="post", activation="relu"),
    "sinusoidal_sandwich_mqa": dict(position="sinusoidal", norm_placement="sandwich", n_kv_heads=1),
    "deepnorm_gqa": dict(norm_placement="deepnorm", n_kv_heads=2, activation="geglu"),
    "nopos": dict(position="none"),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_causality(name):
  cfg = tiny(**VARIANTS[name])
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((1, 12))
  t = 7
  changed = ids.at[0, t].set((ids[0, t] + 1) % cfg.vocab_size)
  a, b = forward(cfg, params, ids), forward(cfg, params, changed)
  np.testing.assert_array_equal(a[:, :t], b[:, :t])
  assert not np.allclose(a[:, t:], b[:, t:])


@pytest.mark.parametrize("name", ["llama", "gpt2", "deepnorm_gqa"])
def test_scanned_and_unscanned_stacks_are_equal(name):
  scanned = tiny(**VARIANTS[name])
  looped = scanned.replace(scan_layers=False)
  params = registry.init_params(scanned, jax.random.key(0))
  loop_params = unstack_layers(params)
  assert "layers_1" in loop_params["blocks"]
  assert jax.tree.structure(loop_params) == jax.tree.structure(
      registry.param_shapes(looped))
  ids = random_ids((2, 9))
  np.testing.assert_allclose(forward(scanned, params, ids), forward(looped, loop_params, ids), atol=1e-5)
  restacked = stack_layers(loop_params)
  jax.tree.map(np.testing.assert_array_equal, restacked, params)


def _loss_and_grad(cfg, params, ids):
  model = registry.build(cfg)

  def loss(p):
    logits = model.apply({"params": p}, input_ids=ids)
    return -jnp.mean(jax.nn.log_softmax(logits[:, :-1]) * jax.nn.one_hot(ids[:, 1:], cfg.vocab_size))

  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("policy", ["full", "dots", "outputs"])
@pytest.mark.parametrize("scan", [True, False])
def test_remat_leaves_loss_and_grads_unchanged(policy, scan):
  base = tiny(scan_layers=scan)
  params = registry.init_params(base, jax.random.key(0))
  ids = random_ids((2, 8))
  l0, g0 = _loss_and_grad(base, params, ids)
  l1, g1 = _loss_and_grad(base.replace(remat=policy), params, ids)
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


@pytest.mark.parametrize("name", ["llama", "gpt2", "bloom", "t5bias_post"])
def test_packed_segments_equal_separate_sequences(name):
  cfg = tiny(**VARIANTS[name])
  params = registry.init_params(cfg, jax.random.key(0))
  a, b = random_ids((1, 5), seed=1), random_ids((1, 7), seed=2)
  packed = jnp.concatenate([a, b], axis=1)
  segments = jnp.array([[1] * 5 + [2] * 7])
  out = forward(cfg, params, packed, segment_ids=segments)
  np.testing.assert_allclose(out[:, :5], forward(cfg, params, a), atol=1e-5)
  np.testing.assert_allclose(out[:, 5:], forward(cfg, params, b), atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gpt2", "bloom"])
def test_left_padding_does_not_change_real_tokens(name):
  cfg = tiny(**VARIANTS[name])
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((1, 6))
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), ids], axis=1)
  mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_allclose(
      forward(cfg, params, padded, attention_mask=mask)[:, 3:], forward(cfg, params, ids), atol=1e-5)


def test_jit_and_eager_agree():
  cfg = tiny()
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((1, 6))
  eager = registry.build(cfg).apply({"params": params}, input_ids=ids)
  np.testing.assert_allclose(forward(cfg, params, ids), eager, atol=1e-6)


def test_dropout_is_active_only_when_not_deterministic():
  cfg = tiny(embed_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1)
  params = registry.init_params(cfg, jax.random.key(0))
  model = registry.build(cfg)
  ids = random_ids((1, 6))
  det = model.apply({"params": params}, input_ids=ids)
  np.testing.assert_allclose(det, forward(cfg, params, ids), atol=1e-6)
  r1 = model.apply({"params": params}, input_ids=ids, deterministic=False, rngs={"dropout": jax.random.key(1)})
  r2 = model.apply({"params": params}, input_ids=ids, deterministic=False, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(r1, det) and not np.allclose(r1, r2)


def test_bf16_compute_with_fp32_params():
  cfg = tiny(dtype="bfloat16")
  params = registry.init_params(cfg, jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  logits = forward(cfg, params, random_ids((1, 6)))
  assert logits.dtype == jnp.float32
  ref = forward(cfg.replace(dtype="float32"), params, random_ids((1, 6)))
  np.testing.assert_allclose(logits, ref, atol=0.05)


def test_every_parameter_has_logical_axes():
  cfg = tiny(position="learned", qkv_bias=True, out_bias=True, mlp_bias=True, norm="layernorm",
             norm_bias=True, tie_embeddings=False, embed_norm=True)
  axes = registry.param_axes(cfg)
  shapes = registry.param_shapes(cfg)
  for spec, shape in zip(jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
                         jax.tree.leaves(shapes)):
    assert len(spec) == len(shape.shape) and all(name is not None for name in spec), spec


def test_embed_scale_multiplies_token_embeddings_by_sqrt_d_model():
  from research.models.decoder import Embedder

  cfg = tiny(position="sinusoidal")
  params = registry.init_params(cfg, jax.random.key(0))["embed"]
  ids = random_ids((1, 6))
  positions = jnp.arange(6)[None]
  plain = Embedder(cfg).apply({"params": params}, ids, positions)
  scaled = Embedder(cfg.replace(embed_scale=True)).apply({"params": params}, ids, positions)
  from research.layers import positions as pos_lib

  pe = pos_lib.sinusoidal(positions, cfg.d_model)
  np.testing.assert_allclose(scaled - pe, (plain - pe) * cfg.d_model ** 0.5, rtol=1e-5, atol=1e-6)
