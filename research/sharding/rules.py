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

BATCH = ("data", "fsdp")

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
    # Activations (constrained at block boundaries) and input batches.
    ("batch", BATCH),
    ("act_batch", BATCH),
    ("act_length", None),
    ("act_embed", None),
)


def logical_to_sharding(specs, mesh: Mesh, rules=RULES):
  """Logical PartitionSpecs -> NamedShardings on `mesh` (a tree in, a tree out)."""
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def tree_shardings(abstract_boxed, mesh: Mesh, rules=RULES):
  """NamedShardings for a tree whose leaves may be boxed with logical names (nn.Partitioned).

  Unboxed leaves, and boxes whose names do not match the leaf's rank (e.g. Adafactor's
  factored moments), are replicated.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  leaves = nn.unbox(abstract_boxed)

  def one(spec, leaf):
    if not isinstance(spec, PartitionSpec) or len(spec) != len(getattr(leaf, "shape", ())):
      spec = PartitionSpec()
    return NamedSharding(mesh, nn.logical_to_mesh_axes(tuple(spec), rules))

  return jax.tree.map(one, specs, leaves, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Input batches: rows split over the data-parallel axes, everything else whole."""
  return NamedSharding(mesh, PartitionSpec(BATCH))
