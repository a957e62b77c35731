"""research.models.encoder_decoder: masks, caching, packing, DeepNorm, MoE in both stacks."""

import functools

import jax
import numpy as np
import pytest

from research import presets
from research.config import ModelConfig
from research.layers.kv_cache import EncoderDecoderCache, StaticKV
from research.models import registry


def tiny_t5(**overrides) -> ModelConfig:
  base = dict(family="encoder_decoder", vocab_size=97, d_model=32, n_layers=2, n_decoder_layers=3,
              n_heads=4, d_ff=48, max_seq_len=64, norm_eps=1e-6, position="t5", rel_buckets=8,
              rel_max_distance=16, attn_scale=1.0, activation="relu")
  base.update(overrides)
  return ModelConfig(**base)


CONFIGS = {
    "t5_v1_0": {},
    "t5_v1_1": dict(activation="geglu_tanh", tie_embeddings=False, head_dim=16),
    "rope_gqa_post": dict(position="rope", n_kv_heads=2, norm_placement="post", norm="layernorm",
                          attn_scale=None),
    "learned_deepnorm": dict(position="learned", norm_placement="deepnorm", norm="layernorm"),
    "sinusoidal_sandwich_mqa": dict(position="sinusoidal", norm_placement="sandwich",
                                    n_kv_heads=1, attn_scale=None, activation="swiglu"),
    # Switch-style: every other FFN of both stacks a top-1 MoE; capacity T never drops.
    "switch_every_2": dict(n_layers=2, n_decoder_layers=2, moe_experts=4, moe_top_k=1,
                           moe_every=2, moe_capacity_factor=4.0),
}


@functools.lru_cache(maxsize=None)
def _setup(name):
  cfg = tiny_t5(**CONFIGS[name])
  model = registry.build(cfg)
  params = registry.init_params(cfg, jax.random.key(0))
  forward = jax.jit(lambda p, **kw: model.apply({"params": p}, **kw))
  return cfg, model, params, forward


def _inputs(seed=0, b=2, s=9, t=7):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, 97, (b, s)).astype(np.int32)
  mask = np.ones((b, s), np.int32)
  mask[1, -3:] = 0
  dec = rng.integers(3, 97, (b, t)).astype(np.int32)
  return ids, mask, dec


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_decoding_equals_the_uncached_forward(name):
  cfg, model, params, forward = _setup(name)
  ids, mask, dec = _inputs()
  reference = np.asarray(forward(params, input_ids=ids, attention_mask=mask, decoder_input_ids=dec))
  encode = jax.jit(lambda p, i, m: model.apply({"params": p}, input_ids=i, attention_mask=m,
                                               method="encode"))
  decode = jax.jit(lambda p, d, e, c: model.apply(
      {"params": p}, decoder_input_ids=d, encoded=e, encoder_segment=None, cache=c,
      method="decode"))
  encoded, segment = encode(params, ids, mask)
  cache = EncoderDecoderCache.init(cfg, segment, dec.shape[1])
  logits, cache = decode(params, dec[:, :3], encoded, cache)
  # The encoder's keys/values are projected once; later steps do not see the encoder output.
  assert isinstance(cache.cross, StaticKV) and cache.cross.k.shape[0] == cfg.decoder_layers
  outs = [logits]
  for t in range(3, dec.shape[1]):
    logits, cache = decode(params, dec[:, t:t + 1], None, cache)
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), reference, atol=3e-5)


def test_loop_and_remat_equal_the_scanned_stack():
  from research.layers.stack import unstack_layers

  cfg, _, params, forward = _setup("switch_every_2")
  looped = tiny_t5(**CONFIGS["switch_every_2"], scan_layers=False, remat="full")
  ids, mask, dec = _inputs()
  reference = forward(params, input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
  other = jax.jit(lambda p: registry.build(looped).apply(
      {"params": p}, input_ids=ids, attention_mask=mask, decoder_input_ids=dec))(
          unstack_layers(params))
  np.testing.assert_allclose(np.asarray(other), np.asarray(reference), atol=2e-5)


def test_encoder_is_bidirectional_and_decoder_causal():
  _, _, params, forward = _setup("t5_v1_0")
  ids, _, dec = _inputs()
  base = np.asarray(forward(params, input_ids=ids, decoder_input_ids=dec))
  later_source = ids.copy()
  later_source[:, -1] = (later_source[:, -1] + 1) % 97
  changed = np.asarray(forward(params, input_ids=later_source, decoder_input_ids=dec))
  # The last source token reaches every target position, the first one included.
  assert np.all(np.abs(changed - base).max(axis=-1) > 1e-6)
  later_target = dec.copy()
  later_target[:, 4] = (later_target[:, 4] + 1) % 97
  changed = np.asarray(forward(params, input_ids=ids, decoder_input_ids=later_target))
  np.testing.assert_allclose(changed[:, :4], base[:, :4], atol=1e-6)
  assert np.abs(changed[:, 4:] - base[:, 4:]).max() > 1e-4


def test_padding_is_invisible_on_both_sides():
  _, _, params, forward = _setup("t5_v1_0")
  ids, _, dec = _inputs()
  short = forward(params, input_ids=ids[:1, :6], decoder_input_ids=dec[:1, :5])
  padded_ids = np.concatenate([np.full((1, 2), 5, np.int32), ids[:1, :6], ids[:1, :3]], axis=1)
  enc_mask = np.array([[0, 0] + [1] * 6 + [0] * 3], np.int32)
  padded_dec = np.concatenate([dec[:1, :5], dec[:1, :2]], axis=1)
  dec_mask = np.array([[1] * 5 + [0, 0]], np.int32)
  padded = forward(params, input_ids=padded_ids, attention_mask=enc_mask,
                   decoder_input_ids=padded_dec, decoder_attention_mask=dec_mask)
  np.testing.assert_allclose(np.asarray(padded)[:, :5], np.asarray(short), atol=2e-5)


def test_packed_examples_equal_separate_rows():
  _, _, params, forward = _setup("t5_v1_1")
  ids, _, dec = _inputs(t=8)
  first = forward(params, input_ids=ids[:1, :5], decoder_input_ids=dec[:1, :3])
  second = forward(params, input_ids=ids[1:, :4], decoder_input_ids=dec[1:, :5])
  packed = forward(
      params, input_ids=np.concatenate([ids[:1, :5], ids[1:, :4]], axis=1),
      segment_ids=np.array([[1] * 5 + [2] * 4], np.int32),
      decoder_input_ids=np.concatenate([dec[:1, :3], dec[1:, :5]], axis=1),
      decoder_segment_ids=np.array([[1] * 3 + [2] * 5], np.int32))
  packed = np.asarray(packed)
  np.testing.assert_allclose(packed[:, :3], np.asarray(first), atol=2e-5)
  np.testing.assert_allclose(packed[:, 3:], np.asarray(second), atol=2e-5)


def test_decoder_input_ids_are_required_and_segments_come_in_pairs():
  _, _, params, forward = _setup("t5_v1_0")
  ids, _, dec = _inputs()
  with pytest.raises(ValueError, match="decoder_input_ids"):
    forward(params, input_ids=ids)
  with pytest.raises(ValueError, match="decoder_segment_ids together"):
    forward(params, input_ids=ids, decoder_input_ids=dec, segment_ids=np.ones_like(ids))


def test_deepnorm_uses_the_encoder_decoder_gains():
  cfg = tiny_t5(norm_placement="deepnorm", n_layers=6, n_decoder_layers=3, d_model=64, d_ff=256)
  params = registry.init_params(cfg, jax.random.key(1))
  (_, enc_beta), (_, dec_beta) = cfg.deepnorm_encdec()
  xavier = (2.0 / (64 + 256)) ** 0.5
  for stack, beta in (("encoder", enc_beta), ("decoder", dec_beta)):
    std = float(np.std(params[stack]["blocks"]["layers"]["mlp"]["wi"]["kernel"]))
    assert std == pytest.approx(beta * xavier, rel=0.05), stack
  # Queries and keys keep gain 1 (DeepNet, Algorithm 2).
  q = params["decoder"]["blocks"]["layers"]["cross_attn"]["q"]["kernel"]
  assert float(np.std(q)) == pytest.approx((2.0 / (64 + 64)) ** 0.5, rel=0.05)


def test_t5_presets_initialise_as_mesh_tensorflow():
  """Embedding N(0, 1); kernels N(0, 1/fan_in); queries N(0, 1/(d_model * head_dim))."""
  cfg = presets.get("t5-v1_1-small-smoke", d_model=128, d_ff=256)
  params = registry.init_params(cfg, jax.random.key(0))
  std = lambda x: float(np.std(np.asarray(x)))  # noqa: E731
  layers = params["decoder"]["blocks"]["layers"]
  assert std(params["embed"]["tokens"]["embedding"]) == pytest.approx(1.0, rel=0.05)
  assert std(layers["attn"]["q"]["kernel"]) == pytest.approx((128 * 32) ** -0.5, rel=0.05)
  assert std(layers["cross_attn"]["k"]["kernel"]) == pytest.approx(128 ** -0.5, rel=0.05)
  assert std(layers["attn"]["o"]["kernel"]) == pytest.approx(128 ** -0.5, rel=0.05)  # N * H in
  assert std(layers["mlp"]["wo"]["kernel"]) == pytest.approx(256 ** -0.5, rel=0.05)
  assert std(params["lm_head"]["kernel"]) == pytest.approx(128 ** -0.5, rel=0.05)


def test_switch_stacks_route_every_other_layer():
  cfg, model, params, _ = _setup("switch_every_2")
  for stack in ("encoder", "decoder"):
    group = params[stack]["blocks"]["layers"]
    assert set(group) == {"block_0", "block_1"}
    assert "mlp" in group["block_0"] and "moe" in group["block_1"]
  ids, mask, dec = _inputs()
  _, state = jax.jit(lambda p: model.apply({"params": p}, input_ids=ids, attention_mask=mask,
                                           decoder_input_ids=dec, mutable=["moe"]))(params)
  losses = jax.tree.leaves(state["moe"])
  assert losses and all(np.isfinite(np.asarray(x)).all() for x in losses)


def test_ffn_dropout_applies_only_when_training():
  cfg = tiny_t5(ffn_dropout=0.5)
  model = registry.build(cfg)
  params = registry.init_params(cfg, jax.random.key(0))
  ids, _, dec = _inputs()
  forward = jax.jit(lambda det, p, key: model.apply({"params": p}, input_ids=ids, decoder_input_ids=dec,
                                                    deterministic=det, rngs={"dropout": key}),
                    static_argnums=0)
  run = lambda det, key: forward(det, params, key)  # noqa: E731
  np.testing.assert_array_equal(run(True, jax.random.key(1)), run(True, jax.random.key(2)))
  assert not np.allclose(run(False, jax.random.key(1)), run(True, jax.random.key(1)))


@pytest.mark.parametrize("changes, needle", [
    (dict(n_decoder_layers=0), "n_decoder_layers=0 must be > 0"),
    (dict(position="alibi"), "position='alibi' is not supported for family='encoder_decoder'"),
    (dict(parallel_block=True), "parallel_block=True is not supported"),
    (dict(init_scheme="xavier"), "ModelConfig.init_scheme='xavier' is not allowed"),
    (dict(moe_experts=4, n_layers=2, n_decoder_layers=3, moe_every=2),
     "n_decoder_layers=3 must be divisible by ModelConfig.moe_every=2"),
])
def test_invalid_encoder_decoder_configs_are_named(changes, needle):
  with pytest.raises(ValueError) as err:
    tiny_t5(**changes)
  assert needle in str(err.value)


def test_decoder_layers_field_belongs_to_the_family():
  with pytest.raises(ValueError, match="n_decoder_layers=3 only applies to family="):
    ModelConfig(n_decoder_layers=3)
  with pytest.raises(ValueError, match="scale_decoder_outputs=False only applies to family="):
    ModelConfig(scale_decoder_outputs=False)


def test_decoder_output_scale_is_apart_from_the_tying():
  """scale_decoder_outputs=None follows tie_embeddings; set, it scales a tied or an untied head
  by d_model^-0.5 or leaves it (transformers 5's T5 has all four)."""
  ids, _, dec = _inputs()
  for tied in (True, False):
    cfg = tiny_t5(tie_embeddings=tied)
    assert cfg.decoder_output_scaled == tied
    params = registry.init_params(cfg, jax.random.key(0))
    scaled, unscaled = (
        registry.build(cfg.replace(scale_decoder_outputs=s)).apply(
            {"params": params}, input_ids=ids, decoder_input_ids=dec) for s in (True, False))
    assert np.abs(unscaled).max() > 1e-2
    np.testing.assert_allclose(scaled, unscaled * cfg.d_model ** -0.5, rtol=1e-5, atol=1e-6)


@functools.lru_cache(maxsize=None)
def _span_corruption_steps(mesh_name):
  """(losses, parameters) after 3 span-corruption SGD steps of switch_every_2 on `mesh_name`;
  cached, so the single-device reference runs once for every mesh compared with it."""
  from research.config.mesh import MeshConfig
  from research.config.optim import OptimizerConfig
  from research.config.train import TrainConfig
  from research.data.span_corruption import corrupt_batch
  from research.sharding.mesh import make_mesh
  from research.sharding.plan import plan_training
  from research.train import objectives, optimizer as opt_lib
  from research.train.state import TrainState
  from research.train.step import make_train_step

  meshes = {"one_device": (MeshConfig(data=1), jax.devices()[:1]),
            "data2_fsdp2_tensor2": (MeshConfig(data=2, fsdp=2, tensor=2), None),
            "expert2_data2_tensor2": (MeshConfig(data=2, expert=2, tensor=2), None)}
  cfg, _, params, _ = _setup("switch_every_2")
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 90, (8, 33)).astype(np.int32)
  batch = corrupt_batch({"input_ids": tokens[:, :-1], "targets": tokens[:, 1:],
                         "segment_ids": np.ones((8, 32), np.int32)},
                        sentinels=np.arange(96, 80, -1), eos_id=2, pad_id=0,
                        decoder_start_id=0, seed=0, epoch=0)
  tx, lr = opt_lib.build(OptimizerConfig(name="sgd", lr=0.5, momentum=0.9, warmup_steps=0), 100)
  mesh_cfg, devices = meshes[mesh_name]
  mesh = make_mesh(mesh_cfg, devices)
  plan = plan_training(cfg, tx, mesh_cfg, mesh)
  state = jax.device_put(TrainState.create(jax.device_get(params), tx, jax.random.key(1)),
                         plan.state)
  step = make_train_step(registry.build(cfg), objectives.seq2seq_lm, tx, lr, TrainConfig(),
                         grad_shardings=plan.grads)
  losses = []
  with plan.scope():
    step = jax.jit(step, in_shardings=(plan.state, plan.batch), donate_argnums=0)
    for _ in range(3):
      state, metrics = step(state, {k: jax.device_put(v, plan.batch) for k, v in batch.items()})
      losses.append(float(metrics["loss"]))
  return np.array(losses), jax.device_get(state.params)


@pytest.mark.parametrize("mesh_name", ["data2_fsdp2_tensor2", "expert2_data2_tensor2"])
def test_sharded_training_equals_one_device(mesh_name):
  """Span-corruption steps of a Switch-style model: the same losses and parameters on a mesh
  of 8 simulated devices as on one (cross-attention, both stacks' MoE, expert parallelism)."""
  ref_losses, ref_params = _span_corruption_steps("one_device")
  losses, sharded = _span_corruption_steps(mesh_name)
  assert losses[-1] < losses[0]
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), sharded, ref_params)
