"""The one table that maps logical axis names onto mesh axes, for every model family.

Parameters and activations name their dims logically where they are created (layers/);
this table decides the parallelism: `embed` over `fsdp` shards weights ZeRO-3 style,
`mlp`/`heads`/`vocab` over `tensor` is Megatron column/row parallelism, `batch` over
`data` and `fsdp` is data parallelism, `experts` over `expert` is expert parallelism.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Rows of a batch are split over every axis that is not model-parallel.
BATCH = ("data", "fsdp", "expert")

RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # Parameters.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("experts", "expert"),
    ("layers", None),
    ("norm", None),
    ("positions", None),
    ("relpos_buckets", None),
    # Encoder-only family: token-type tables, ALBERT's factorised embedding width E, head outputs.
    ("token_types", None),
    ("factor_embed", None),
    ("labels", None),
    ("stage", "stage"),
    # PEFT parameters (research.peft): LoRA's rank, virtual tokens, adapter bottlenecks.
    ("lora_rank", None),
    ("virtual_tokens", None),
    ("adapter", None),
    # Activations (constrained at block boundaries) and input batches.
    ("batch", BATCH),
    ("act_batch", BATCH),
    ("act_length", None),
    ("act_embed", None),
)


def for_mesh(cfg, kind: str = "params") -> tuple:
  """The rules for a MeshConfig and what they place: 'params', 'grads' or 'opt_state'.

  ZeRO stage z shards the optimizer state (z >= 1), gradients (z >= 2) and parameters
  (z = 3) over `data` as well as `fsdp`; pipelining puts `layers` on `stage`; sequence
  parallelism puts the activations' length on `tensor`.
  """
  needs = {"opt_state": 1, "grads": 2, "params": 3}[kind]
  embed = ("data", "fsdp") if cfg.zero_stage >= needs else "fsdp"
  overrides = {
      "embed": embed,
      "layers": "stage" if cfg.stage > 1 else None,
      "act_length": "tensor" if cfg.sequence_parallel else None,
  }
  return tuple((name, overrides.get(name, axes)) for name, axes in RULES)


def logical_to_sharding(specs, mesh: Mesh, rules=RULES):
  """Logical PartitionSpecs -> NamedShardings on `mesh` (a tree in, a tree out)."""
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def _fit(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes (last first) from any dim whose size they do not divide, e.g. GPT-2's
  50257-token vocabulary on a 2-way tensor axis: that dim is then replicated."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    while axes and dim % _size(mesh, axes):
      axes = axes[:-1]
    fitted.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*fitted)


def _size(mesh: Mesh, axes: tuple[str, ...]) -> int:
  size = 1
  for a in axes:
    size *= mesh.shape[a]
  return size


def tree_shardings(abstract_boxed, mesh: Mesh, rules=RULES):
  """NamedShardings for a tree whose leaves may be boxed with logical names (nn.Partitioned).

  Unboxed leaves, and boxes whose names do not match the leaf's rank (e.g. Adafactor's
  factored moments), are replicated; mesh axes that do not divide a dim are dropped.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  leaves = nn.unbox(abstract_boxed)

  def one(spec, leaf):
    shape = getattr(leaf, "shape", ())
    if not isinstance(spec, PartitionSpec) or len(spec) != len(shape):
      return NamedSharding(mesh, PartitionSpec())
    mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules)
    return NamedSharding(mesh, _fit(mesh_spec, shape, mesh))

  return jax.tree.map(one, specs, leaves, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Input batches: rows split over the data-parallel axes, everything else whole."""
  return NamedSharding(mesh, PartitionSpec(BATCH))
