"""Sharded training equals single-device training, and parameters land where the rules say."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from research import presets
from research.config.mesh import MeshConfig
from research.config.optim import OptimizerConfig
from research.config.train import TrainConfig
from research.models import registry
from research.sharding.mesh import make_mesh
from research.sharding.plan import plan_training
from research.train import objectives, optimizer as opt_lib
from research.train.state import TrainState
from research.train.step import make_train_step

MODEL = presets.get("llama2-7b-smoke", vocab_size=128)
STEPS = 5
# SGD with momentum: its state is parameter-shaped (so ZeRO and offload have something to
# place) and its update is linear in the gradient, so parameters can be compared tightly
# (Adam's normalisation amplifies reduction-order rounding in near-zero gradients).
OPTIMIZER = OptimizerConfig(name="sgd", lr=0.5, momentum=0.9, warmup_steps=0)


def _batches(rows=16, length=16, steps=STEPS):
  """The same random batch every step, so the loss must fall (the model memorises it)."""
  ids = np.random.default_rng(0).integers(0, MODEL.vocab_size, (rows, length + 1)).astype(np.int32)
  batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
           "loss_mask": np.ones((rows, length), np.float32),
           "segment_ids": np.ones((rows, length), np.int32)}
  return [batch] * steps


@functools.lru_cache(maxsize=None)
def _initial_params():
  return jax.device_get(registry.init_params(MODEL, jax.random.key(0)))


def _setup(mesh_cfg: MeshConfig, devices=None, remat: str = "none"):
  model_cfg = MODEL.replace(remat=remat)
  if mesh_cfg.stage > 1:
    model_cfg = MODEL.replace(pipeline_stages=mesh_cfg.stage,
                              pipeline_microbatches=mesh_cfg.pipeline_microbatches)
  tx, lr = opt_lib.build(OPTIMIZER, 100)
  mesh = make_mesh(mesh_cfg, devices)
  plan = plan_training(model_cfg, tx, mesh_cfg, mesh)
  # The same initial state everywhere, placed by each plan (plan.init_fn would compile an
  # initialiser per mesh, which the equality tests do not need).
  state = jax.device_put(TrainState.create(_initial_params(), tx, jax.random.key(1)), plan.state)
  step = make_train_step(
      registry.build(model_cfg), objectives.causal_lm, tx, lr, TrainConfig(),
      grad_shardings=plan.grads, opt_device_shardings=plan.opt_device,
      opt_host_shardings=plan.state.opt_state if plan.opt_device is not None else None)
  with plan.scope():
    step = jax.jit(step, in_shardings=(plan.state, plan.batch), out_shardings=(plan.state, None),
                   donate_argnums=0).lower(plan.abstract, _abstract_batch(plan)).compile()
  return plan, state, step


def _abstract_batch(plan):
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=plan.batch) for k, v in _batches(steps=1)[0].items()}


def _trajectory(mesh_cfg: MeshConfig, devices=None, remat: str = "none"):
  plan, state, step = _setup(mesh_cfg, devices, remat)
  losses = []
  for batch in _batches():
    state, metrics = step(state, {k: jax.device_put(v, plan.batch) for k, v in batch.items()})
    losses.append(float(metrics["loss"]))
  return np.array(losses), state


@functools.lru_cache(maxsize=None)
def _reference():
  losses, state = _trajectory(MeshConfig(data=1), devices=jax.devices()[:1])
  return losses, jax.device_get(state.params)


# Remat policies compose with the meshes: these cases also rematerialise (same results).
REMAT = {"fsdp8": "full", "data2_fsdp2_tensor2": "dots", "stage2_data4_pipeline": "full",
         "data2_tensor4_zero2_sequence_parallel": "outputs"}
MESHES = {
    "data8": MeshConfig(data=8),
    "fsdp8": MeshConfig(data=1, fsdp=8),
    "data2_fsdp2_tensor2": MeshConfig(data=2, fsdp=2, tensor=2),
    "tensor4_data2": MeshConfig(data=2, tensor=4),
    "stage2_data4_pipeline": MeshConfig(data=4, stage=2, pipeline_microbatches=2),
    # Combinations, one compile each: ZeRO-1 with host offload; ZeRO-2 with sequence parallel.
    "data8_zero1_offload": MeshConfig(data=8, zero_stage=1, offload_optimizer=True),
    "data2_tensor4_zero2_sequence_parallel": MeshConfig(data=2, tensor=4, zero_stage=2,
                                                        sequence_parallel=True),
}


@pytest.mark.parametrize("name", MESHES)
def test_loss_trajectory_matches_single_device(name):
  ref_losses, ref_params = _reference()
  losses, state = _trajectory(MESHES[name], remat=REMAT.get(name, "none"))
  assert losses[-1] < losses[0]
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), jax.device_get(state.params), ref_params)


def test_parameter_specs_follow_the_rules():
  tx, _ = opt_lib.build(OptimizerConfig(), 100)
  cfg = MeshConfig(data=2, fsdp=2, tensor=2)
  plan = plan_training(MODEL, tx, cfg, make_mesh(cfg))
  specs = jax.tree.map(lambda s: s.spec, plan.state.params)
  layers = specs["blocks"]["layers"]
  assert layers["attn"]["q"]["kernel"] == P(None, "fsdp", "tensor", None)  # column parallel
  assert layers["attn"]["o"]["kernel"] == P(None, "tensor", None, "fsdp")  # row parallel
  assert layers["mlp"]["wi_gate"]["kernel"] == P(None, "fsdp", "tensor")
  assert layers["mlp"]["wo"]["kernel"] == P(None, "tensor", "fsdp")
  assert layers["attn_norm"]["scale"] == P(None, None)
  assert specs["embed"]["tokens"]["embedding"] == P("tensor", "fsdp")
  assert specs["lm_head"]["kernel"] == P("fsdp", "tensor")
  assert plan.batch.spec == P(("data", "fsdp", "expert"))


def test_zero_stages_shard_optimizer_gradients_then_parameters():
  tx, _ = opt_lib.build(OptimizerConfig(), 100)
  q_spec = lambda tree: tree["blocks"]["layers"]["attn"]["q"]["kernel"].spec
  for stage in (0, 1, 2, 3):
    cfg = MeshConfig(data=8, zero_stage=stage)
    plan = plan_training(MODEL, tx, cfg, make_mesh(cfg))
    adam_mu = plan.state.opt_state[-1][0].mu
    sharded = P(None, ("data", "fsdp"), "tensor", None)
    assert (q_spec(adam_mu) == sharded) == (stage >= 1)
    assert (plan.grads is not None and q_spec(plan.grads) == sharded) == (stage >= 2)
    assert (q_spec(plan.state.params) == sharded) == (stage >= 3)


def test_pipeline_shards_layers_over_stages():
  tx, _ = opt_lib.build(OptimizerConfig(), 100)
  cfg = MeshConfig(data=4, stage=2)
  plan = plan_training(MODEL.replace(pipeline_stages=2, pipeline_microbatches=2), tx, cfg, make_mesh(cfg))
  assert plan.state.params["blocks"]["layers"]["attn"]["q"]["kernel"].spec[0] == "stage"


def test_offloaded_optimizer_state_lives_in_host_memory():
  plan, state, _ = _setup(MESHES["data8_zero1_offload"])
  kinds = {x.sharding.memory_kind for x in jax.tree.leaves(state.opt_state)}
  assert kinds == {"pinned_host"}
  assert {x.sharding.memory_kind for x in jax.tree.leaves(state.params)} == {"device"}


def test_fsdp_divides_parameter_and_optimizer_memory_by_the_axis_size():
  # The compiled steps of the data8 and fsdp8 trajectories (parameters and SGD momentum).
  sizes = {}
  for name in ("data8", "fsdp8"):
    plan, _, step = _setup(MESHES[name], remat=REMAT.get(name, "none"))
    sizes[name] = step.memory_analysis().argument_size_in_bytes
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(plan.abstract))
  assert sizes["data8"] > 0.95 * state_bytes  # every device holds the whole state
  assert sizes["data8"] / sizes["fsdp8"] > 6.5, sizes  # ~8x less per device


def test_pmap_step_equals_the_jit_step():
  tx, lr = opt_lib.build(OPTIMIZER, 100)
  state = TrainState.create(_initial_params(), tx, jax.random.key(1))
  step = jax.pmap(make_train_step(registry.build(MODEL), objectives.causal_lm, tx, lr, TrainConfig(),
                                  axis_name="batch"), axis_name="batch")
  replicated = jax.tree.map(lambda x: np.broadcast_to(x, (8, *x.shape)), jax.device_get(state))
  losses = []
  for batch in _batches():
    split = {k: v.reshape(8, -1, *v.shape[1:]) for k, v in batch.items()}
    replicated, metrics = step(replicated, split)
    losses.append(float(metrics["loss"][0]))
  ref_losses, ref_params = _reference()
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  params = jax.tree.map(lambda x: x[0], jax.device_get(replicated.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params, ref_params)


def test_checkpoint_saved_on_one_mesh_restores_on_another(tmp_path):
  from research import checkpoint

  tx, _ = opt_lib.build(OPTIMIZER, 100)
  saved_cfg = MeshConfig(data=8)
  saved_plan = plan_training(MODEL, tx, saved_cfg, make_mesh(saved_cfg))
  rng = np.random.default_rng(0)
  state = TrainState.create(_initial_params(), tx, jax.random.key(1))
  state = state.replace(opt_state=jax.tree.map(
      lambda x: (x + rng.standard_normal(x.shape)).astype(x.dtype) if x.ndim else x, state.opt_state))
  state = jax.device_put(state, saved_plan.state)
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=1, keep_best=False, async_save=False)
  ckpt.save(1, state, {"data": None})
  ckpt.close()

  new_cfg = MeshConfig(data=1, fsdp=2, tensor=4)
  new_plan = plan_training(MODEL, tx, new_cfg, make_mesh(new_cfg))
  restored, _ = checkpoint.Checkpointer(tmp_path, every=1, keep=1, keep_best=False).restore_latest(
      new_plan.abstract)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
  q = restored.params["blocks"]["layers"]["attn"]["q"]["kernel"]
  assert q.sharding.spec == P(None, "fsdp", "tensor", None) and q.sharding.mesh.shape["tensor"] == 4
