"""Every sharding a training run needs, computed once from the model, optimizer and mesh.

    plan = plan_training(model_cfg, optimizer, mesh_cfg, mesh)
    state = jax.jit(plan.init_fn, out_shardings=plan.state)(rng, loss_scale)

Nothing is allocated to plan: shapes come from `jax.eval_shape` of the initialiser, logical
names from the parameters' boxes, mesh axes from the rules for this MeshConfig.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research.models import registry
from research.sharding import rules as rules_lib
from research.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
  mesh: Mesh
  rules: tuple  # parameter rules, also used for activation constraints while tracing
  abstract: Any  # TrainState of ShapeDtypeStructs carrying the shardings below
  state: Any  # TrainState of shardings (optimizer state in host memory when offloaded)
  batch: NamedSharding
  grads: Any  # shardings gradients are constrained to (ZeRO-2/3), or None
  opt_device: Any  # device-memory shardings of the optimizer state when offloaded, or None
  init_fn: Any  # (rng, loss_scale) -> TrainState, unboxed

  def param_shardings(self, boxed):
    """Shardings of other parameters (a frozen base, a teacher) under the same rules."""
    return rules_lib.tree_shardings(boxed, self.mesh, self.rules)

  @contextlib.contextmanager
  def scope(self):
    """Context for tracing model code: the mesh and the logical rules for its constraints."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield


def check_offload_supported(mesh: Mesh) -> None:
  kinds = {m.kind for m in mesh.devices.flat[0].addressable_memories()}
  if "pinned_host" not in kinds:
    platform = mesh.devices.flat[0].platform
    raise ValueError(f"mesh.offload_optimizer=True needs a 'pinned_host' memory kind, but the "
                     f"{platform} backend offers only {sorted(kinds)}; set mesh.offload_optimizer=false")


def plan_training(model_cfg, optimizer, mesh_cfg, mesh: Mesh, init_params=None) -> TrainingPlan:
  """`init_params(rng)` -> boxed parameters trains those instead of the model's own (a PEFT
  method's, research.peft)."""
  model = registry.build(model_cfg)
  param_rules = rules_lib.for_mesh(mesh_cfg, "params")
  if init_params is None:
    init_params = lambda rng: model.init({"params": rng}, **registry.dummy_inputs(model_cfg))["params"]  # noqa: E731

  def init_boxed(rng, loss_scale):
    params_rng, state_rng = jax.random.split(rng)
    params = init_params(params_rng)
    return TrainState.create(nn.unbox(params), optimizer, state_rng, loss_scale), params

  abstract_state, boxed_params = jax.eval_shape(init_boxed, jax.random.key(0), 1.0)
  params_sh = rules_lib.tree_shardings(boxed_params, mesh, param_rules)
  for_opt = rules_lib.tree_shardings(boxed_params, mesh, rules_lib.for_mesh(mesh_cfg, "opt_state"))
  replicated = NamedSharding(mesh, PartitionSpec())
  opt_device = optax.tree_map_params(
      optimizer, lambda _, sh: sh, abstract_state.opt_state, for_opt,
      transform_non_params=lambda _: replicated)
  opt_sh = opt_device
  if mesh_cfg.offload_optimizer:
    check_offload_supported(mesh)
    opt_sh = jax.tree.map(lambda sh: sh.with_memory_kind("pinned_host"), opt_device)
  grads = None
  if mesh_cfg.zero_stage >= 2 or mesh_cfg.fsdp > 1:
    grads = rules_lib.tree_shardings(boxed_params, mesh, rules_lib.for_mesh(mesh_cfg, "grads"))
  state_sh = jax.tree.map(lambda _: replicated, abstract_state).replace(params=params_sh, opt_state=opt_sh)
  abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract_state, state_sh)
  return TrainingPlan(
      mesh=mesh, rules=param_rules, abstract=abstract, state=state_sh,
      batch=rules_lib.batch_sharding(mesh), grads=grads,
      opt_device=opt_device if mesh_cfg.offload_optimizer else None,
      init_fn=lambda rng, scale: init_boxed(rng, scale)[0])
