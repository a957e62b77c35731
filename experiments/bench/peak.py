"""`peak`: the device's measured matmul ceiling and memory bandwidth.

On CPU this is the denominator of MFU (no datasheet figure applies); the torch row shows
what the PyTorch reference's matmul reaches on the same machine.
"""

from __future__ import annotations

import time

from research import hardware

# Matmul size n (n x n x n) and copy size in MiB.
SIZES = {"tiny": dict(n=256, mib=16, reps=2), "cpu": dict(n=2048, mib=256, reps=10),
         "full": dict(n=8192, mib=2048, reps=20)}


def _torch_matmul_flops(n: int, reps: int) -> float | None:
  try:
    import torch
  except ImportError:
    return None
  a, b = torch.ones(n, n), torch.ones(n, n)
  a @ b
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def run(size: str, reps: int | None = None) -> list[dict]:
  s = SIZES[size]
  reps = reps or s["reps"]
  n = s["n"]
  rows = []
  for dtype in ("float32", "bfloat16"):
    flops = hardware.measure_matmul_flops(dtype, n=n, repeats=reps)
    rows.append({"measure": f"jax matmul {dtype} {n}^3", "value": flops / 1e9, "unit": "GFLOP/s"})
  torch_flops = _torch_matmul_flops(n, reps)
  if torch_flops is not None:
    rows.append({"measure": f"torch matmul float32 {n}^3", "value": torch_flops / 1e9, "unit": "GFLOP/s"})
  bandwidth = hardware.measure_copy_bandwidth(s["mib"], repeats=reps)
  rows.append({"measure": f"jax copy {s['mib']} MiB (read + write)", "value": bandwidth / 1e9, "unit": "GB/s"})
  if hardware.jax.devices()[0].platform == "cpu":
    hardware.cpu_peak(refresh=True)  # the cache keeps the highest ceiling measured
  peak, source = hardware.peak_flops("bfloat16")
  rows.append({"measure": f"MFU denominator ({source.split(' (')[0]})", "value": peak / 1e9, "unit": "GFLOP/s"})
  return rows
