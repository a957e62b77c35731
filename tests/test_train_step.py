import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.config.optim import OptimizerConfig
from research.config.train import TrainConfig
from research.models import registry
from research.train import objectives, optimizer as opt_lib
from research.train.state import TrainState
from research.train.step import make_eval_step, make_train_step
from support import tiny


def _batch(rows=8, length=12, vocab=97, seed=0):
  ids = np.asarray(jax.random.randint(jax.random.key(seed), (rows, length + 1), 0, vocab))
  mask = np.ones((rows, length), np.float32)
  mask[:, :3] = 0.0  # unequal weights per row would expose a mean-of-means bug
  mask[0, :] = 0.0
  mask[0, -1] = 1.0
  return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": mask,
          "segment_ids": np.ones((rows, length), np.int32)}


def _run(model_cfg, train_cfg, batch, steps=1, opt_cfg=None):
  model = registry.build(model_cfg)
  tx, lr = opt_lib.build(opt_cfg or OptimizerConfig(lr=1e-2, warmup_steps=0), 100)
  state = TrainState.create(registry.init_params(model_cfg, jax.random.key(0)), tx, jax.random.key(1),
                            loss_scale=train_cfg.loss_scale_init if train_cfg.precision == "fp16" else 1.0)
  step = jax.jit(make_train_step(model, objectives.causal_lm, tx, lr, train_cfg))
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  return state, history


def test_gradient_accumulation_equals_the_full_batch():
  # SGD: the update is linear in the gradient, so the comparison can be tight (Adam's
  # normalisation would amplify float rounding in near-zero gradients).
  cfg = tiny()
  batch = _batch()
  sgd = OptimizerConfig(name="sgd", lr=0.5, warmup_steps=0)
  full, m_full = _run(cfg, TrainConfig(grad_accum=1), batch, steps=2, opt_cfg=sgd)
  micro, m_micro = _run(cfg, TrainConfig(grad_accum=4), batch, steps=2, opt_cfg=sgd)
  for a, b in zip(m_full, m_micro):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), full.params, micro.params)


def test_remat_does_not_change_training():
  batch = _batch()
  plain, _ = _run(tiny(), TrainConfig(), batch, steps=2)
  remat, _ = _run(tiny(remat="full"), TrainConfig(), batch, steps=2)
  # Recomputed activations round like the stored ones only up to the compiler's fusion choices,
  # and Adam's normalisation amplifies that in near-zero gradients (seen: 3.5e-6 on weights of
  # ~0.03); a remat bug would move weights by about the learning rate (1e-2).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), plain.params, remat.params)


def test_loss_is_the_token_weighted_mean():
  cfg = tiny()
  batch = _batch()
  model = registry.build(cfg)
  params = registry.init_params(cfg, jax.random.key(0))
  logits = jax.jit(lambda p, ids: model.apply({"params": p}, input_ids=ids))(params, batch["input_ids"])
  logp = jax.nn.log_softmax(logits)
  nll = -np.take_along_axis(np.asarray(logp), batch["targets"][..., None], -1)[..., 0]
  expected = (nll * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
  sums = jax.jit(make_eval_step(model, objectives.causal_lm))(params, batch)
  assert float(sums["loss"] / sums["weight"]) == pytest.approx(expected, rel=1e-5)


def test_non_finite_steps_are_skipped_and_counted():
  cfg = tiny()
  bad = _batch()
  bad["loss_mask"] = bad["loss_mask"] * np.float32("nan")
  state, history = _run(cfg, TrainConfig(), bad, steps=3)
  params0 = registry.init_params(cfg, jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, state.params, params0)
  assert int(state.skipped) == 3 and int(state.nonfinite_run) == 3 and int(state.step) == 3
  assert [h["skipped"] for h in history] == [1, 1, 1]


def test_fp16_loss_scale_halves_on_overflow_and_grows_after_good_steps():
  cfg = tiny(dtype="float16")
  bad = _batch()
  bad["loss_mask"][1, -1] = np.inf
  # The period only matters after good steps; the same as below, so both runs are one program.
  state, _ = _run(cfg, TrainConfig(precision="fp16", loss_scale_init=64.0, loss_scale_period=2), bad,
                  steps=3)
  assert float(state.loss_scale) == 8.0 and int(state.skipped) == 3
  good, history = _run(cfg, TrainConfig(precision="fp16", loss_scale_init=4.0, loss_scale_period=2),
                       _batch(), steps=3)
  assert [h["loss_scale"] for h in history] == [4.0, 4.0, 8.0]  # doubled after two good steps
  assert float(good.loss_scale) == 8.0 and int(good.good_steps) == 1
  assert all(np.isfinite(h["loss"]) for h in history) and int(good.skipped) == 0


def test_training_reduces_the_loss_on_a_fixed_batch():
  _, history = _run(tiny(), TrainConfig(), _batch(), steps=30)
  assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_token_cross_entropy_equals_optax_and_argmax_accuracy():
  import optax

  from research.train.objectives import token_cross_entropy

  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 7, 11)) * 4, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, (3, 7)), jnp.int32)
  targets = targets.at[0, :3].set(jnp.argmax(logits[0, :3], -1))  # some right answers
  weights = jnp.asarray(rng.integers(0, 2, (3, 7)), jnp.float32)
  loss, weight, correct = token_cross_entropy(logits, targets, weights)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  np.testing.assert_allclose(loss, (ce * weights).sum(), rtol=1e-6)
  assert weight == weights.sum()
  assert correct == ((jnp.argmax(logits, -1) == targets) * weights).sum()
  grad = jax.grad(lambda z: token_cross_entropy(z, targets, weights)[0])(logits)
  ref = jax.grad(lambda z: (optax.softmax_cross_entropy_with_integer_labels(z, targets) * weights).sum())(logits)
  np.testing.assert_allclose(grad, ref, atol=1e-6)



def test_accuracy_breaks_ties_to_the_first_index_as_argmax():
  import optax

  from research.train.objectives import token_cross_entropy

  # All-equal logits (a destroyed model): the argmax is token 0, so only targets 0 are right.
  targets = jnp.asarray([[0, 3, 0, 5, 1]], jnp.int32)
  weights = jnp.asarray([[1.0, 1.0, 0.5, 1.0, 1.0]])
  _, _, correct = token_cross_entropy(jnp.zeros((1, 5, 7)), targets, weights)
  assert float(correct) == 1.5
  # A tie for the maximum at tokens 2 and 4: the first of them counts, the other does not.
  logits = jnp.tile(jnp.asarray([0.0, 1.0, 3.0, -2.0, 3.0, 0.5]), (1, 3, 1))
  targets = jnp.asarray([[2, 4, 1]], jnp.int32)
  loss, _, correct = token_cross_entropy(logits, targets, jnp.ones((1, 3)))
  assert float(correct) == 1.0
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  np.testing.assert_allclose(loss, ce.sum(), rtol=1e-6)  # ties change the accuracy only


def test_eval_accuracy_of_a_zeroed_model_counts_only_targets_equal_to_token_0():
  cfg = tiny()
  batch = _batch()
  batch["targets"] = np.array(batch["targets"])
  batch["targets"][1:3, 5:8] = 0
  model = registry.build(cfg)
  params = jax.tree.map(jnp.zeros_like, registry.init_params(cfg, jax.random.key(0)))
  sums = jax.jit(make_eval_step(model, objectives.causal_lm))(params, batch)
  expected = ((batch["targets"] == 0) * batch["loss_mask"]).sum()
  assert 0 < expected < batch["loss_mask"].sum()
  assert float(sums["accuracy"]) == expected
