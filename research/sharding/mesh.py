"""Building the device mesh from a MeshConfig.

Axis types are `Auto` (GSPMD propagation from the shardings we give jit and from
`with_sharding_constraint`), not the `Explicit` default of `jax.make_mesh`: the model's
logical constraints are hints for the partitioner, not types carried by every array.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh

from research.config.mesh import AXES, MeshConfig


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
  """The mesh over `devices` (default: all). A mesh with no -1 axis may use fewer devices
  than a single process has (the first ones); a multi-process run must use all of them."""
  devices = jax.devices() if devices is None else list(devices)
  n = cfg.num_devices(len(devices))
  if n < len(devices):
    if jax.process_count() > 1:
      raise ValueError(f"mesh {cfg.describe()} uses {n} of {len(devices)} devices; a multi-process "
                       "run must use every device (set one axis to -1)")
    devices = devices[:n]
  sizes = cfg.shape(len(devices))
  return jax.make_mesh(tuple(sizes[a] for a in AXES), AXES,
                       axis_types=(AxisType.Auto,) * len(AXES), devices=devices)
