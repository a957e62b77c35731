"""Multi-host start-up through `jax.distributed`, from flags, the environment, or the cluster.

    python -m research.train ... --coordinator host0:1234 --num-processes 2 --process-id 0
    RESEARCH_COORDINATOR=host0:1234 RESEARCH_NUM_PROCESSES=2 RESEARCH_PROCESS_ID=0 python -m research.train ...
    python -m research.train ... --distributed      # SLURM, TPU pods, Open MPI: JAX detects them

On CPU the processes exchange collectives through gloo, so a multi-process run works on one
machine over loopback (the test suite does this). Nothing here belongs in ExperimentConfig:
process ids differ between the hosts of one run.
"""

from __future__ import annotations

import dataclasses
import os

import jax


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False  # let JAX detect SLURM / TPU / MPI

  @property
  def enabled(self) -> bool:
    return self.auto or self.coordinator is not None

  @classmethod
  def from_args(cls, coordinator=None, num_processes=None, process_id=None, auto=False) -> "ClusterSpec":
    env = os.environ.get
    spec = cls(
        coordinator=coordinator or env("RESEARCH_COORDINATOR"),
        num_processes=num_processes if num_processes is not None else _int(env("RESEARCH_NUM_PROCESSES")),
        process_id=process_id if process_id is not None else _int(env("RESEARCH_PROCESS_ID")),
        auto=auto,
    )
    if spec.coordinator and (spec.num_processes is None or spec.process_id is None):
      raise ValueError("a coordinator address needs --num-processes and --process-id "
                       "(or RESEARCH_NUM_PROCESSES and RESEARCH_PROCESS_ID)")
    return spec


def _int(value: str | None) -> int | None:
  return None if value in (None, "") else int(value)


def initialize(spec: ClusterSpec) -> None:
  """Joins the run's processes; must come before anything touches a JAX device."""
  if not spec.enabled:
    return
  # Only consulted by the CPU backend; accelerators use their own collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if spec.auto and spec.coordinator is None:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=spec.coordinator,
                               num_processes=spec.num_processes, process_id=spec.process_id)


def is_primary() -> bool:
  """The process that writes run files (config, metrics, samples)."""
  return jax.process_index() == 0
