"""What the hardware can do: peak matmul FLOP/s and memory bandwidth, for MFU.

Accelerators use their datasheet bf16 peak (dense, no sparsity). On CPU no datasheet figure
applies, so the peak is measured: the best of several large jitted matmuls, cached per machine
in the research cache directory. `python -m experiments.bench peak` reports both measurements.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp

# XLA:CPU options the train benchmark (experiments/bench/train.py) measured faster for these
# models on a 2-core x86 CPU: YNNPACK only for the matmuls. By default XLA:CPU also hands
# reductions (softmax sums, norms) to YNNPACK, where the profile showed each one taking
# 0.5-1 ms, longer than the matmuls around it; the LLaMA d_model 512 step gains 5-10%.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=dot",)


def configure_cpu(environ=os.environ) -> None:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS, leaving any flag the user set alone.

  `import research` calls it (configure_on_import), so notebooks, scripts and the entry points
  run alike; it takes effect if JAX has not yet created its CPU client (nothing has run), and
  only the CPU backend reads these flags.
  """
  flags = environ.get("XLA_FLAGS", "").split()
  names = {f.split("=", 1)[0] for f in flags}
  flags += [f for f in CPU_XLA_FLAGS if f.split("=", 1)[0] not in names]
  environ["XLA_FLAGS"] = " ".join(flags)


def configure_on_import() -> None:
  """configure_cpu() if JAX's backends are not yet initialised; else says once, in the log,
  that this process runs without the flags (something ran on JAX before `import research`)."""
  from jax._src import xla_bridge

  if not xla_bridge.backends_are_initialized():
    configure_cpu()
    return
  flags = os.environ.get("XLA_FLAGS", "").split()
  if jax.default_backend() == "cpu" and not all(f in flags for f in CPU_XLA_FLAGS):
    logging.getLogger(__name__).info(
        "JAX's CPU backend started before `import research`, so XLA:CPU runs without %s (the "
        "train step is 5-10%% slower); import research before running anything on JAX to get "
        "them", " ".join(CPU_XLA_FLAGS))


# Dense bf16 peak FLOP/s per device, from the vendors' datasheets.
DATASHEET_BF16 = {
    "TPU v2": 45e12, "TPU v3": 123e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
    "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12,
    "V100": 125e12, "T4": 65e12,
}


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("RESEARCH_CACHE_DIR", pathlib.Path.home() / ".cache" / "research"))


def _best_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def measure_matmul_flops(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of the best of `repeats` n x n x n matmuls on the default device."""
  a = jnp.ones((n, n), dtype)
  b = jnp.ones((n, n), dtype)
  seconds = _best_time(jax.jit(jnp.matmul), a, b, repeats=repeats)
  return 2.0 * n ** 3 / seconds


def measure_copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
  """Bytes/s of a large device copy (read + write counted)."""
  x = jnp.ones((megabytes * 2 ** 20 // 4,), jnp.float32)
  seconds = _best_time(jax.jit(lambda v: v + 1.0), x, repeats=repeats)
  return 2.0 * x.nbytes / seconds


def peak_flops(dtype: str = "bfloat16") -> tuple[float, str]:
  """(peak FLOP/s per device, where the figure comes from)."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    for name, flops in DATASHEET_BF16.items():
      if name.lower() in device.device_kind.lower():
        return flops, f"datasheet bf16 peak of {device.device_kind}"
    return float("nan"), f"no datasheet figure for {device.device_kind}"
  override = os.environ.get("RESEARCH_PEAK_FLOPS")
  if override:
    return float(override), "RESEARCH_PEAK_FLOPS"
  value, path = cpu_peak()
  return value, f"measured float32 matmul ceiling of this CPU (cached in {path})"


def cpu_peak(refresh: bool = False) -> tuple[float, pathlib.Path]:
  """(the CPU's float32 matmul FLOP/s, the file caching it), measured on first use.

  bf16 matmuls are emulated on most CPUs, so the fp32 ceiling is the one that matters there.
  A ceiling cannot be exceeded, so the cache keeps the highest figure measured: one taken
  while other work shared the cores is raised by the next `refresh` (`python -m
  experiments.bench peak` refreshes it).
  """
  key = hashlib.sha1(f"{platform.processor()}|{platform.machine()}|{os.cpu_count()}".encode()).hexdigest()[:12]
  path = cache_dir() / f"cpu_peak_{key}.json"
  cached = json.loads(path.read_text())["float32_matmul_flops"] if path.exists() else None
  if cached is not None and not refresh:
    return cached, path
  value = max(measure_matmul_flops("float32", repeats=10), cached or 0.0)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".tmp{os.getpid()}")
  tmp.write_text(json.dumps({"float32_matmul_flops": value}))
  tmp.replace(path)
  return value, path
