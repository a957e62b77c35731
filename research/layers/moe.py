"""Mixture-of-experts FFN: a router sends each token to its top-k of E expert FFNs, whose
outputs are summed weighted by the gates (GShard, Lepikhin et al. 2020; Switch, Fedus et al.
2021; Mixtral, Jiang et al. 2024). A drop-in replacement for `ffn.MLP`, with any activation
of the registry, GLU variants included.

Two ways to run the experts:
- capacity (GShard/Switch): each expert has C slots per sequence; a dispatch mask gathers the
  tokens into an [E, C] buffer per sequence, the experts run as one batched einsum, and the
  combine weights scatter the results back. Assignments past capacity are dropped.
- dropless, sorted (MegaBlocks, Gale et al. 2022): the B*T*K assignments are sorted by expert
  and each expert multiplies its contiguous run with `jax.lax.ragged_dot` (a grouped matmul:
  native on TPU, XLA's or a Triton lowering on GPU; on CPU JAX expands it densely, so it is
  exact but E times the work). Each batch shard (mesh axes TOKEN_AXES) sorts its own tokens.

Expert parallelism: when a mesh with an `expert` axis of size > 1 is set (`jax.set_mesh`),
the experts' weights are split over that axis and the capacity path runs the experts inside
`jax.shard_map` (manual over `expert` only; data/FSDP/tensor axes stay with the compiler),
moving the token buffers with two all-to-alls, GShard's dispatch/combine. Dropless routing
under expert parallelism uses capacity = T, which can drop nothing.

Losses and metrics leave through `self.sow` into the collection 'moe' (see
`collect_moe_metrics`): apply with `mutable=['moe']` to read them.

Letters: B batch, T tokens per sequence, D model dim, E experts, C capacity, F expert hidden,
K choices per token, A = B*T*K assignments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec as P

from research.layers import activations, init, linear, routing

# Logical axis of the expert dimension of every expert weight, and the mesh axis the shared
# rules table maps it to.
EXPERTS = "experts"
EXPERT_AXIS = "expert"
# Mesh axes that split the batch (data parallelism and FSDP), as the shared rules table maps
# the batch; the dropless path sorts tokens within each of their shards.
TOKEN_AXES = ("data", "fsdp")
COLLECTION = "moe"


def _per_expert(base: linear.Initializer) -> linear.Initializer:
  """Initialises each expert's slice of an [E, ...] kernel as its own matrix, so fans (Xavier)
  are those of one expert, not of the stacked tensor."""

  def init_fn(key, shape, dtype=jnp.float32):
    keys = jax.random.split(key, shape[0])
    return jax.vmap(lambda k: base(k, shape[1:], dtype))(keys)

  return init_fn


class ExpertKernel(nn.Module):
  """The stacked [E, in, out] kernel (and [E, out] bias) of one projection of every expert."""

  shape: tuple[int, int, int]
  axes: tuple[str, str, str]
  use_bias: bool
  kernel_init: linear.Initializer
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self):
    kernel = self.param("kernel", nn.with_logical_partitioning(_per_expert(self.kernel_init), self.axes),
                        self.shape, self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.axes[0], self.axes[2])),
                        (self.shape[0], self.shape[2]), self.param_dtype)
    return kernel, bias


# ------------------------------------------------------------------ the expert FFNs


def _experts_on_slots(x_BECD, weights, act, dtype):
  """Every expert's FFN on its own slots: one batched einsum per projection."""

  def project(h, name, eq):
    kernel, bias = weights[name]
    y = jnp.einsum(eq, h, kernel.astype(dtype))
    return y if bias is None else y + bias.astype(dtype)[None, :, None, :]

  if "wi_gate" in weights:
    h = act(project(x_BECD, "wi_gate", "BECD,EDF->BECF")) * project(x_BECD, "wi_up", "BECD,EDF->BECF")
  else:
    h = act(project(x_BECD, "wi", "BECD,EDF->BECF"))
  return project(h, "wo", "BECF,EFD->BECD")


def _experts_sorted(x_BTD, expert_BTK, gate_BTK, weights, act, dtype):
  """Dropless: every assignment through its expert, grouped by a sort and `ragged_dot`."""
  b, t, d = x_BTD.shape
  k = expert_BTK.shape[-1]
  n_experts = weights["wo"][0].shape[0]
  expert_A = expert_BTK.reshape(-1)
  order_A = jnp.argsort(expert_A, stable=True)
  x_AD = x_BTD.reshape(b * t, d)[order_A // k].astype(dtype)
  sorted_expert_A = expert_A[order_A]
  sizes_E = jnp.bincount(expert_A, length=n_experts).astype(jnp.int32)

  def project(h, name):
    kernel, bias = weights[name]
    y = jax.lax.ragged_dot(h, kernel.astype(dtype), sizes_E, preferred_element_type=dtype)
    return y if bias is None else y + bias.astype(dtype)[sorted_expert_A]

  if "wi_gate" in weights:
    h = act(project(x_AD, "wi_gate")) * project(x_AD, "wi_up")
  else:
    h = act(project(x_AD, "wi"))
  y_AD = project(h, "wo")
  y_BTKD = jnp.zeros_like(y_AD).at[order_A].set(y_AD).reshape(b, t, k, d)
  return jnp.einsum("BTK,BTKD->BTD", gate_BTK.astype(dtype), y_BTKD)


def _token_axes(batch: int) -> tuple[str, ...]:
  """The axes of the current mesh among TOKEN_AXES that split a batch of this size evenly."""
  mesh = jax.sharding.get_abstract_mesh()
  axes, size = [], 1
  for axis in TOKEN_AXES:
    n = mesh.shape.get(axis, 1) if not mesh.empty else 1
    if n > 1 and batch % (size * n) == 0:
      axes.append(axis)
      size *= n
  return tuple(axes)


def _per_shard(fn, axes: tuple[str, ...]):
  """Runs fn(x_BTD, expert_BTK, gate_BTK, weights) -> y_BTD on each shard of the batch.

  The dropless path sorts all the assignments it is given. Left to the compiler, a sort over
  a batch split across devices gathers every token onto every device, which then all compute
  every expert on every token; here each batch shard sorts and multiplies its own tokens,
  with the weights whole on each shard (gathered where they are split over these axes, as
  FSDP does anyway).
  """
  if not axes:
    return fn
  tokens = P(axes)
  return lambda x, e, g, w: jax.shard_map(
      fn, in_specs=(tokens, tokens, tokens, jax.tree.map(lambda _: P(), w)), out_specs=tokens,
      axis_names=set(axes))(x, e, g, w)


# ----------------------------------------------------------------- expert parallelism


def expert_mesh():
  """The mesh set with `jax.set_mesh` when it has an `expert` axis of size > 1, else None.

  Works inside `jit`: the abstract mesh is part of the tracing context.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or EXPERT_AXIS not in mesh.axis_names or mesh.shape[EXPERT_AXIS] == 1:
    return None
  return mesh


def _expert_parallel(fn, mesh, n_experts: int, batch: int):
  """Wraps fn(x_BECD, weights) -> y_BECD so each device of the `expert` axis runs its experts.

  Weights are split over their leading E axis. When the batch divides the axis, each device
  holds B/n sequences' [E, C] buffers; an all-to-all sends every expert's slots to the
  device holding that expert (GShard's dispatch) and a second one brings the results back
  (combine). Otherwise (small decoding batches) every device takes all sequences' slots of
  its own experts and the compiler moves the data.
  """
  n = mesh.shape[EXPERT_AXIS]
  if n_experts % n:
    raise ValueError(f"moe_experts={n_experts} must be divisible by the '{EXPERT_AXIS}' mesh "
                     f"axis of size {n}")
  weight_spec = P(EXPERT_AXIS)

  if batch % n == 0:
    def body(x_BECD, weights):
      x_BECD = jax.lax.all_to_all(x_BECD, EXPERT_AXIS, split_axis=1, concat_axis=0, tiled=True)
      y_BECD = fn(x_BECD, weights)
      return jax.lax.all_to_all(y_BECD, EXPERT_AXIS, split_axis=0, concat_axis=1, tiled=True)

    x_spec = P(EXPERT_AXIS)
  else:
    body, x_spec = fn, P(None, EXPERT_AXIS)

  def run(x_BECD, weights):
    specs = jax.tree.map(lambda _: weight_spec, weights)
    return jax.shard_map(body, mesh=mesh, in_specs=(x_spec, specs), out_specs=x_spec,
                         axis_names={EXPERT_AXIS})(x_BECD, weights)

  return run


# --------------------------------------------------------------------------- the layer


class MoE(nn.Module):
  cfg: object  # ModelConfig
  beta: float | None = None  # DeepNorm init gain

  @nn.compact
  def __call__(self, x_BTD: jax.Array, deterministic: bool = True,
               valid_BT: jax.Array | None = None) -> jax.Array:
    """valid_BT marks real tokens (not padding): only they claim capacity and enter the losses.

    `deterministic` is accepted for the MLP's interface; routing has no randomness.
    """
    cfg = self.cfg
    b, t, d = x_BTD.shape
    n_experts, k, f = cfg.moe_experts, cfg.moe_top_k, cfg.expert_hidden
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    act, gated = activations.get(cfg.activation)
    valid_BT = jnp.ones((b, t), bool) if valid_BT is None else valid_BT.astype(bool)

    # The router runs in float32 whatever the compute dtype (Switch, section 2.4: selective
    # precision), since small logit errors flip the top-k choice.
    logits_BTE = linear.Linear(
        (d,), (n_experts,), ("embed", EXPERTS), kernel_init=linear.normal(cfg.init_std),
        dtype=jnp.float32, param_dtype=pdtype, name="router")(x_BTD.astype(jnp.float32))
    expert_BTK, gate_BTK = routing.top_k_gates(logits_BTE, k, cfg.moe_softmax_after_topk)
    gate_BTK = gate_BTK * valid_BT[..., None]

    def kernel(name, shape, axes, role):
      return ExpertKernel(shape, axes, cfg.mlp_bias, init.kernel_init(cfg, role, 1, self.beta),
                          pdtype, name=name)()

    names = ("wi_gate", "wi_up") if gated else ("wi",)
    weights = {n: kernel(n, (n_experts, d, f), (EXPERTS, "embed", "mlp"), "ffn_in") for n in names}
    weights["wo"] = kernel("wo", (n_experts, f, d), (EXPERTS, "mlp", "embed"), "ffn_out")

    mesh = expert_mesh()
    if cfg.moe_dropless and mesh is None:
      experts = lambda x, e, g, w: _experts_sorted(x, e, g, w, act, dtype)
      y_BTD = _per_shard(experts, _token_axes(b))(x_BTD, expert_BTK, gate_BTK, weights)
      kept_BTK = jnp.broadcast_to(valid_BT[..., None], expert_BTK.shape)
    else:
      if cfg.moe_dropless:
        capacity = limit = t
      elif cfg.moe_expert_capacity is not None:
        capacity = limit = min(t, cfg.moe_expert_capacity)
      else:
        capacity = routing.expert_capacity(t, n_experts, k, cfg.moe_capacity_factor)
        limit = routing.group_capacity(valid_BT, n_experts, k, cfg.moe_capacity_factor)
      slot_BTK, kept_BTK = routing.assign_slots(expert_BTK, valid_BT, n_experts, limit,
                                                cfg.moe_priority)
      dispatch_BTEC, combine_BTEC = routing.dispatch_and_combine(
          expert_BTK, gate_BTK, slot_BTK, kept_BTK, n_experts, capacity)
      x_BECD = jnp.einsum("BTEC,BTD->BECD", dispatch_BTEC.astype(dtype), x_BTD.astype(dtype))
      experts = lambda x, w: _experts_on_slots(x, w, act, dtype)
      if mesh is not None:
        experts = _expert_parallel(experts, mesh, n_experts, b)
      y_BECD = experts(x_BECD, weights)
      y_BTD = jnp.einsum("BTEC,BECD->BTD", combine_BTEC.astype(dtype), y_BECD)

    balance, load_E = routing.load_balance_loss(logits_BTE, expert_BTK, valid_BT)
    z = routing.router_z_loss(logits_BTE, valid_BT)
    routed = k * jnp.maximum(jnp.sum(valid_BT), 1)
    self.sow(COLLECTION, "aux_loss", cfg.moe_aux_weight * balance + cfg.moe_z_weight * z)
    self.sow(COLLECTION, "load_balance_loss", balance)
    self.sow(COLLECTION, "z_loss", z)
    self.sow(COLLECTION, "expert_load", load_E)
    self.sow(COLLECTION, "dropped_fraction", 1.0 - jnp.sum(kept_BTK) / routed)
    return checkpoint_name(y_BTD, "mlp_out")


# ------------------------------------------------------------------------- metrics


def collect_moe_metrics(moe_collection: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(total auxiliary loss, metrics) from the 'moe' collection of `apply(..., mutable=['moe'])`.

  The total is the SUM of every MoE layer's weighted `aux_loss`, as Switch adds alpha times
  each layer's loss to the objective (so the weights are per layer). Metrics are averaged over
  the MoE layers: 'moe/aux_loss' (the total), 'moe/load_balance_loss', 'moe/z_loss',
  'moe/dropped_fraction' and 'moe/expert_load/{i}', the fraction of assignments sent to expert i
  (1/E each when balanced). Pure and jit-friendly; an empty collection gives zeros and no
  metrics but the total.
  """
  found: dict[str, list[jax.Array]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(moe_collection)[0]:
    keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    found.setdefault(keys[-1], []).append(jnp.asarray(leaf, jnp.float32))
  total = sum((jnp.sum(x) for x in found.get("aux_loss", [])), jnp.zeros((), jnp.float32))
  metrics = {"moe/aux_loss": total}
  for name in ("load_balance_loss", "z_loss", "dropped_fraction"):
    if name in found:
      metrics[f"moe/{name}"] = jnp.mean(jnp.concatenate([x.reshape(-1) for x in found[name]]))
  if "expert_load" in found:
    n_experts = found["expert_load"][0].shape[-1]
    load = jnp.concatenate([x.reshape(-1, n_experts) for x in found["expert_load"]]).mean(axis=0)
    metrics.update({f"moe/expert_load/{i}": load[i] for i in range(n_experts)})
  return total, metrics
