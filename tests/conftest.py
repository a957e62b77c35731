"""Test-session setup, run before anything imports JAX.

- 8 simulated CPU devices, so sharding tests run anywhere.
- XLA's CPU backend at optimisation level 0: the test models are tiny, so compile time
  dominates; this cuts it severalfold and changes no result beyond float rounding.
- XLA:CPU's elemental (LLVM IR) emitters for fusions instead of its newer MLIR fusion
  emitters: the smoke train step compiles in 0.8 CPU s instead of 2.9, runs as fast, and its
  loss is bit-identical; tests/test_moe.py takes 56 CPU s instead of 94.
- Each program's LLVM module compiled whole, not split into up to 32 parts to compile in
  parallel: on a 2-core machine shared by two test workers the parts only add overhead
  (tests/test_generate.py 37 CPU s -> 28, same results).
- A persistent compilation cache shared by the xdist workers of one run and, through the
  environment, by the processes the tests start (`python -m research.train`, notebook
  kernels, sweep workers), which would otherwise compile the same programs again.
- research.hardware's XLA:CPU flags, as the command-line entry points set them.
"""

import os
import pathlib

_FLAGS = ("--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
          " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

from research import hardware  # noqa: E402

# The XLA:CPU flags every entry point adds (so subprocesses and in-process runs compile alike).
hardware.configure_cpu()
assert jax.device_count() == 8, "conftest must run before anything imports JAX"
