"""`MeshConfig`: the device mesh, by named axis size. The model code never sees it: logical
axis names on parameters and activations are mapped onto these axes by research.sharding.rules.
"""

from __future__ import annotations

import dataclasses
import math

from research.config import roles, validate

AXES = ("data", "fsdp", "tensor", "stage", "expert")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  # Axis sizes; exactly one may be -1, meaning "all remaining devices".
  data: int = roles.layout(-1)
  fsdp: int = roles.layout(1)
  tensor: int = roles.layout(1)
  stage: int = roles.layout(1)
  expert: int = roles.layout(1)
  # ZeRO (Rajbhandari et al. 2020) over the `data` axis: 1 shards the optimizer state,
  # 2 also the gradients, 3 also the parameters. The `fsdp` axis always shards all three.
  zero_stage: int = roles.layout(0)
  # Megatron sequence parallelism (Korthikanti et al. 2022): the residual stream between
  # attention and FFN (norms, dropout) is split over `tensor` along the sequence.
  sequence_parallel: bool = roles.layout(False)
  # GPipe microbatches when stage > 1 (more microbatches, smaller bubble).
  pipeline_microbatches: int = roles.layout(4)
  # Keep the optimizer state in host memory, moving it to the device only for the update.
  offload_optimizer: bool = roles.layout(False)

  def __post_init__(self):
    own = type(self).__name__
    validate.choice(own, "zero_stage", self.zero_stage, (0, 1, 2, 3))
    validate.positive(own, "pipeline_microbatches", self.pipeline_microbatches)
    sizes = [getattr(self, a) for a in AXES]
    for axis, size in zip(AXES, sizes):
      if size != -1:
        validate.positive(own, axis, size)
    if sizes.count(-1) > 1:
      raise ValueError(f"{own}: at most one axis may be -1 (fill), got "
                       + ", ".join(f"{a}=-1" for a, s in zip(AXES, sizes) if s == -1))

  def shape(self, n_devices: int) -> dict[str, int]:
    """Axis sizes for `n_devices` devices, filling the -1 axis."""
    sizes = {a: getattr(self, a) for a in AXES}
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if -1 in sizes.values():
      if n_devices % fixed:
        raise ValueError(f"MeshConfig {self.describe()} cannot fill {n_devices} devices: "
                         f"the fixed axes multiply to {fixed}, which does not divide {n_devices}")
      sizes = {a: (n_devices // fixed if s == -1 else s) for a, s in sizes.items()}
    elif fixed > n_devices:
      raise ValueError(f"MeshConfig {self.describe()} needs {fixed} devices but {n_devices} are present")
    return sizes

  def num_devices(self, available: int) -> int:
    """Devices the mesh uses: all of them with a -1 axis, else the product of the sizes
    (a smaller mesh takes the first devices, e.g. data=1 on an 8-device machine)."""
    return math.prod(self.shape(available).values())

  def describe(self) -> str:
    return " x ".join(f"{a}={getattr(self, a)}" for a in AXES if getattr(self, a) != 1) or "single device"
