"""research.peft: every method's parameter count, frozen base, zero-init exactness, LoRA
merge, adapter save/reload, cached decoding, packing, sharding and configuration errors."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import peft, pretrained
from research.config import peft as peft_config
from research.config.mesh import MeshConfig
from research.config.optim import OptimizerConfig
from research.config.peft import PeftConfig
from research.config.train import TrainConfig
from research.layers.kv_cache import KVCache
from research.models import registry
from research.peft import core, lora
from research.sharding.mesh import make_mesh
from research.sharding.plan import plan_training
from research.train import objectives, optimizer as opt_lib
from research.train.state import TrainState
from research.train.step import make_train_step
from support import forward, tiny

# Multi-head (K = N), so every attention projection is a square d x d matrix.
D, L, N, P, R, M = 32, 2, 4, 3, 4, 5
CFG = tiny(d_model=D, n_layers=L, n_heads=N)
SETTINGS = dict(rank=R, num_tokens=P, bottleneck=M, adapter_layers=1, prefix_hidden=16)
METHODS = ("lora", "prefix", "prompt", "adapter", "llama_adapter")
ZERO_INIT = ("lora", "adapter", "llama_adapter")


@functools.lru_cache(maxsize=None)
def _tuned(method, cfg=CFG, **kw):
  """The method bound to cfg's model; cached, so the tests that use the same binding share it
  and the functions _init and _apply compile for it."""
  return peft.build(PeftConfig(method=method, **{**SETTINGS, **kw}), registry.build(cfg))


def _base(cfg=CFG):
  return registry.init_params(cfg, jax.random.key(0))


def _ids(shape=(2, 10), seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, CFG.vocab_size)


def _perturbed(tree, seed=5, scale=0.3):
  """Training-form parameters moved away from their init (zero-initialised parts included)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                      for x, k in zip(leaves, keys)])


_COMPILED = {}


def _jitted(tuned, name, fn):
  """fn jitted once per binding (bindings live as long as _tuned's cache, so ids are stable)."""
  key = (id(tuned), name)
  if key not in _COMPILED:
    _COMPILED[key] = jax.jit(fn)
  return _COMPILED[key]


def _init(tuned, seed=2):
  """The method's training-form parameters, unboxed. Jitted: an eager init runs the whole
  wrapped model op by op."""
  return _jitted(tuned, "init", lambda key: nn.unbox(tuned.init(key)))(jax.random.key(seed))


def _apply(tuned, params, ids, **kw):
  apply = _jitted(tuned, "apply", lambda p, i, **kw: tuned.model.apply({"params": p}, input_ids=i, **kw))
  return apply(params, ids, **kw)


def test_methods_agree_with_the_config():
  assert set(peft.METHODS) | {"none"} == set(peft_config.METHODS)


def test_trainable_parameter_counts_match_the_formulas():
  h = D // N
  w = L * 2 * N * h  # every layer's keys and values, per virtual token
  expected = {
      # Hu et al.: 2 x (adapted matrices) x d x r for square d x d matrices (q, k, v, o).
      "lora": 2 * (4 * L) * D * R,
      # Embedding P x D, MLP D -> hidden -> w, with biases; only L x 2 x P x K x H is kept.
      "prefix": P * D + (D * 16 + 16) + (16 * w + w),
      "prompt": P * D,
      # Down D x m + m and up m x D + D, after attention and after the FFN of every layer.
      "adapter": L * 2 * (2 * D * M + M + D),
      # A P x D prompt and N gates in each of the top adapter_layers layers.
      "llama_adapter": 1 * (P * D + N),
  }
  for method, count in expected.items():
    assert _tuned(method).num_trainable() == count, method
  tuned = _tuned("prefix")
  exported = jax.eval_shape(tuned.export, nn.unbox(tuned.trainable_boxed()))
  assert core.count(exported) == L * 2 * P * N * h
  assert _tuned("lora", targets=("attention", "ffn")).num_trainable() == (
      2 * 4 * L * D * R + L * R * (3 * (D + CFG.ffn_hidden)))


@pytest.mark.parametrize("method", METHODS)
def test_training_changes_only_the_methods_parameters(method):
  tuned = _tuned(method, **({"dropout": 0.1} if method == "lora" else {}))
  base = _base()
  base_copy = jax.tree.map(np.array, base)
  tx, lr = opt_lib.build(OptimizerConfig(lr=1e-2, warmup_steps=0), 10)
  state = TrainState.create(_init(tuned), tx, jax.random.key(3))
  start = jax.tree.map(np.array, state.params)
  step = jax.jit(make_train_step(tuned.model, objectives.causal_lm, tx, lr, TrainConfig(),
                                 assemble=lambda t, f: tuned.combine(f, t)))
  ids = np.asarray(_ids((4, 9)))
  batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((4, 8), np.float32),
           "segment_ids": np.ones((4, 8), np.int32)}
  losses = []
  for _ in range(6):
    state, metrics = step(state, batch, base)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < losses[0], losses  # it learns the batch
  # The optimizer holds the method's parameters only, and every one of them moved.
  assert jax.tree.structure(state.params) == jax.tree.structure(start)
  for before, after in zip(jax.tree.leaves(start), jax.tree.leaves(state.params)):
    assert not np.array_equal(before, after)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), base, base_copy)


@pytest.mark.parametrize("method", ZERO_INIT)
def test_zero_initialised_methods_start_as_the_base_model(method):
  # Unscanned and eager, every base operation runs as in the plain model: equal to the bit.
  cfg = dataclasses.replace(CFG, scan_layers=False)
  tuned = _tuned(method, cfg)
  base = _base(cfg)
  ids = _ids()
  plain = registry.build(cfg).apply({"params": base}, input_ids=ids)
  adapted = tuned.model.apply({"params": tuned.combine(base, _init(tuned))},
                              input_ids=ids)
  np.testing.assert_array_equal(np.asarray(adapted), np.asarray(plain))
  # Scanned and jitted: equal up to the compiler's reassociation.
  tuned, base = _tuned(method), _base()
  full = tuned.combine(base, _init(tuned))
  np.testing.assert_allclose(_apply(tuned, full, ids),
                             forward(CFG, base, ids),
                             atol=1e-6)


def test_lora_merged_equals_unmerged_and_unmerges():
  tuned = _tuned("lora", targets=("attention", "ffn", "lm_head"), cfg=dataclasses.replace(CFG, tie_embeddings=False))
  base = registry.init_params(tuned.model.cfg, jax.random.key(0))
  trained = _perturbed(_init(tuned))
  ids = _ids()
  unmerged = _apply(tuned, tuned.combine(base, trained), ids)
  merged_params = lora.merge(tuned.combine(base, trained), tuned.cfg)
  assert jax.tree.structure(merged_params) == jax.tree.structure(base)
  merged = forward(tuned.model.cfg, merged_params, ids)
  assert float(jnp.abs(unmerged - merged).max()) > 0  # sanity: the update is not a no-op ...
  np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-4)  # ... merging keeps the function
  plain = forward(tuned.model.cfg, base, ids)
  assert float(jnp.abs(unmerged - plain).max()) > 1e-2
  restored = lora.unmerge(merged_params, trained, tuned.cfg)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), restored, base)


@pytest.mark.parametrize("method", METHODS)
def test_saved_adapter_reloads_to_the_same_logits(method, tmp_path):
  tuned = _tuned(method)
  base = _base()
  trained = _perturbed(_init(tuned))
  ids = _ids()
  expected = _apply(tuned, tuned.combine(base, trained), ids)
  peft.save_adapter(tmp_path, tuned, trained, base={"kind": "random", "seed": 0})
  files = sorted(p.name for p in tmp_path.iterdir())
  assert files == ["adapter.safetensors", "peft_config.json"]
  model, params = pretrained.restore_adapter(tmp_path)  # the base comes back from its reference
  np.testing.assert_allclose(_apply(tuned, params, ids) if model == tuned.model else None, expected, atol=1e-6)
  # Only the method's own (exported) parameters are in the file.
  cfg, _, stored, _ = peft.load_adapter(tmp_path)
  assert core.count(stored) == core.count(jax.eval_shape(tuned.export, trained)) < core.count(base)
  if method == "prefix":
    assert "prefix_encoder" not in stored  # the reparameterisation is dropped after training


@pytest.mark.parametrize("method", ["lora", "prefix", "adapter", "llama_adapter"])
def test_cached_decoding_equals_the_full_forward(method):
  tuned = _tuned(method, cfg=dataclasses.replace(CFG, n_kv_heads=2))
  base = registry.init_params(tuned.model.cfg, jax.random.key(0))
  params = tuned.combine(base, _perturbed(_init(tuned)))
  ids = _ids((2, 9))
  full = _apply(tuned, params, ids)
  cached = jax.jit(lambda p, i, c: tuned.model.apply({"params": p}, input_ids=i, cache=c))
  prefill, cache = cached(params, ids[:, :6], KVCache.init(tuned.model.cfg, 2, 9))
  steps = [prefill]
  for t in range(6, 9):  # one compiled single-token step
    logits, cache = cached(params, ids[:, t:t + 1], cache)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


def test_prefix_is_seen_by_every_packed_segment():
  tuned = _tuned("prefix")
  params = tuned.combine(_base(), _perturbed(_init(tuned)))
  a, b = _ids((1, 5), seed=7), _ids((1, 4), seed=8)
  packed = _apply(tuned, params, jnp.concatenate([a, b], 1),
                  segment_ids=jnp.asarray([[1] * 5 + [2] * 4]))
  np.testing.assert_allclose(packed[:, 5:], _apply(tuned, params, b), atol=1e-5)
  np.testing.assert_allclose(packed[:, :5], _apply(tuned, params, a), atol=1e-5)


def test_prompt_tuning_prepends_a_soft_prompt():
  tuned = _tuned("prompt")
  base = _base()
  trained = _init(tuned)
  warm = tuned.warm_start(trained, base, jax.random.key(4), vocab_size=CFG.vocab_size)
  table = np.asarray(base["embed"]["tokens"]["embedding"])
  # Lester et al.'s init: each soft-prompt vector is some token's embedding.
  assert all(np.isclose(table, row).all(axis=1).any() for row in np.asarray(warm["soft_prompt"]))
  ids = _ids()
  logits = _apply(tuned, tuned.combine(base, warm), ids)
  assert logits.shape == (2, 10, CFG.vocab_size)
  # The same as the base model reading the prompt's tokens first.
  rows = [int(np.flatnonzero(np.isclose(table, r).all(axis=1))[0]) for r in np.asarray(warm["soft_prompt"])]
  prefixed = jnp.concatenate([jnp.broadcast_to(jnp.asarray(rows), (2, P)), ids], axis=1)
  plain = forward(CFG, base, prefixed)
  np.testing.assert_allclose(logits, plain[:, P:], atol=1e-5)
  with pytest.raises(ValueError, match="cannot decode with a KV cache"):
    tuned.model.apply({"params": tuned.combine(base, warm)}, input_ids=ids, cache=KVCache.init(CFG, 2, 12))


def test_lora_trains_sharded_as_on_one_device():
  tuned = _tuned("lora", targets=("q", "v", "wo"))
  base = _base()
  tx, lr = opt_lib.build(OptimizerConfig(lr=1e-2, warmup_steps=0), 10)
  ids = np.asarray(_ids((8, 9)))
  batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((8, 8), np.float32),
           "segment_ids": np.ones((8, 8), np.int32)}
  assemble = lambda t, f: tuned.combine(f, t)  # noqa: E731
  step_fn = make_train_step(tuned.model, objectives.causal_lm, tx, lr, TrainConfig(), assemble=assemble)
  results = []
  for mesh_cfg in (MeshConfig(data=1), MeshConfig(data=2, fsdp=2, tensor=2)):
    mesh = make_mesh(mesh_cfg)
    plan = plan_training(CFG, tx, mesh_cfg, mesh, init_params=tuned.init)
    state = jax.jit(plan.init_fn, static_argnums=1, out_shardings=plan.state)(jax.random.key(0), 1.0)
    frozen_sh = plan.param_shardings(tuned.base_boxed)
    step = jax.jit(step_fn, in_shardings=(plan.state, plan.batch, frozen_sh), out_shardings=(plan.state, None))
    with plan.scope():
      for _ in range(2):
        state, _ = step(state, batch, jax.device_put(base, frozen_sh))
    if mesh_cfg.tensor > 1:  # the adapters are sharded by their logical axes
      a = state.params["blocks"]["layers"]["attn"]["q"]["lora_b"]
      assert a.sharding.spec[2] == "tensor"
    results.append(jax.device_get(state.params))
  # Adam at lr 1e-2 turns reduction-order rounding (sharded sums, the scanned stack's
  # recomputed activations) into ~1e-5 differences after two steps.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=3e-5), *results)


def test_configuration_errors_name_the_problem():
  with pytest.raises(ValueError, match="PeftConfig.method='loraa' is not allowed"):
    PeftConfig(method="loraa")
  with pytest.raises(ValueError, match="PeftConfig.rank=0 must be > 0"):
    PeftConfig(method="lora", rank=0)
  with pytest.raises(ValueError, match=r"'qq' matches no projection.*attn/q"):
    _tuned("lora", targets=("qq",))
  from research.config import overrides, registry as configs

  smoke = configs.get("smoke")
  with pytest.raises(ValueError, match="set data.pack=false"):
    overrides.apply(smoke, ["peft.method=prompt"])
  with pytest.raises(ValueError, match="peft.adapter_layers=5 exceeds model.n_layers=2"):
    overrides.apply(smoke, ["peft.method=llama_adapter", "peft.adapter_layers=5"])


@pytest.mark.parametrize("preset", ["bert-base-smoke", "t5-small-smoke", "glm-small-smoke"])
def test_methods_wrap_every_family_and_zero_init_ones_start_as_the_base(preset):
  from research import presets

  cfg = presets.get(preset)
  if cfg.family == "encoder":
    cfg = cfg.replace(encoder_heads=("mlm",))
  base = _base(cfg)
  inputs = registry.dummy_inputs(cfg, batch=2, length=8)

  def logits(model, params):
    out = jax.jit(lambda p: model.apply({"params": p}, **inputs))(params)
    return out["mlm"] if isinstance(out, dict) else out

  plain = logits(registry.build(cfg), base)
  for method in ("lora", "adapter", "llama_adapter", "prefix"):
    tuned = _tuned(method, cfg)
    trained = _init(tuned)
    assert jax.tree.leaves(trained), method
    out = logits(tuned.model, tuned.combine(base, trained))
    if method in ZERO_INIT:
      np.testing.assert_allclose(out, plain, atol=1e-6, err_msg=method)
    else:  # prefix tuning's random prefixes change the output
      assert float(jnp.abs(out - plain).max()) > 0


def test_prompt_tuning_is_refused_where_there_is_no_causal_input_to_prepend_to():
  from research import presets
  from research.config.experiment import ExperimentConfig

  with pytest.raises(ValueError, match="peft.method='prompt' prepends .* model.family='encoder_decoder'"):
    ExperimentConfig(model=presets.get("t5-small-smoke"), train=TrainConfig(objective="span_corruption"),
                     peft=PeftConfig(method="prompt"))
