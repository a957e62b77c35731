import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.config.optim import OptimizerConfig
from research.models import registry
from research.train import optimizer as opt_lib
from support import tiny


def _params():
  cfg = tiny(position="learned", norm="layernorm", norm_bias=True, qkv_bias=True, tie_embeddings=False)
  return registry.init_params(cfg, jax.random.key(0))


def test_decay_mask_excludes_norms_biases_embeddings_by_default():
  mask = opt_lib.decay_mask(OptimizerConfig().decay_exclude)(_params())
  layers = mask["blocks"]["layers"]
  assert layers["attn"]["q"]["kernel"] and layers["mlp"]["wo"]["kernel"] and mask["lm_head"]["kernel"]
  assert not layers["attn"]["q"]["bias"]
  assert not layers["attn_norm"]["scale"] and not layers["attn_norm"]["bias"]
  assert not mask["final_norm"]["scale"]
  assert not mask["embed"]["tokens"]["embedding"] and not mask["embed"]["positions"]["embedding"]


def test_decay_mask_is_configurable():
  mask = opt_lib.decay_mask(("norms",))(_params())
  assert mask["embed"]["tokens"]["embedding"] and mask["blocks"]["layers"]["attn"]["q"]["bias"]
  assert not mask["final_norm"]["scale"]


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedule_warms_up_then_decays(kind):
  cfg = OptimizerConfig(lr=1e-3, warmup_steps=10, schedule=kind, min_lr_ratio=0.1)
  lr = opt_lib.schedule(cfg, total_steps=100)
  assert float(lr(0)) == 0.0
  assert float(lr(5)) == pytest.approx(5e-4)
  assert float(lr(10)) == pytest.approx(1e-3)
  end = {"cosine": 1e-4, "linear": 1e-4, "constant": 1e-3}[kind]
  assert float(lr(100)) == pytest.approx(end, rel=1e-4)
  if kind == "cosine":
    assert float(lr(55)) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-3)  # halfway down


def test_weight_decay_is_decoupled_and_masked():
  params = {"w": jnp.ones(3), "norm": {"scale": jnp.ones(3)}}
  cfg = OptimizerConfig(lr=0.1, weight_decay=0.5, warmup_steps=0, schedule="constant", grad_clip=0.0,
                        decay_exclude=("norms",))
  tx, _ = opt_lib.build(cfg, 10)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones(3), rtol=1e-6)  # -lr * wd * w
  np.testing.assert_allclose(updates["norm"]["scale"], 0.0)


def test_l1_and_l2_penalties_enter_the_gradient():
  params = {"w": jnp.array([2.0, -3.0])}
  cfg = OptimizerConfig(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, warmup_steps=0,
                        schedule="constant", grad_clip=0.0, l1=0.1, l2=0.01, decay_exclude=())
  tx, _ = opt_lib.build(cfg, 10)
  updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -(0.01 * np.array([2.0, -3.0]) + 0.1 * np.array([1.0, -1.0])), rtol=1e-6)


def test_grad_clip_bounds_the_global_norm():
  params = {"w": jnp.zeros(4)}
  cfg = OptimizerConfig(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, warmup_steps=0,
                        schedule="constant", grad_clip=1.0)
  tx, _ = opt_lib.build(cfg, 10)
  updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
  assert float(jnp.linalg.norm(updates["w"])) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("name", ["adamw", "sgd", "adafactor", "lion"])
def test_every_optimizer_reduces_a_quadratic(name):
  params = {"w": jnp.full((4, 4), 3.0)}
  cfg = OptimizerConfig(name=name, lr=0.05, warmup_steps=0, schedule="constant", weight_decay=0.0)
  tx, _ = opt_lib.build(cfg, 100)
  state = tx.init(params)
  loss = lambda p: jnp.sum(p["w"] ** 2)
  start = loss(params)
  for _ in range(20):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = jax.tree.map(jnp.add, params, updates)
  assert loss(params) < 0.8 * start


def test_bad_optimizer_values():
  with pytest.raises(ValueError, match="OptimizerConfig.name='adam' is not allowed"):
    OptimizerConfig(name="adam")
  with pytest.raises(ValueError, match="OptimizerConfig.decay_exclude='layers'"):
    OptimizerConfig(decay_exclude=("layers",))
