"""Shared pieces of the benchmarks: alternating timing, the machine's description, tables."""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable


def median_times(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2,
                 settle: int = 1) -> dict[str, float]:
  """Median seconds per call of each function, calling them in turn `reps` times.

  Each function must block until its work is done (jax.block_until_ready; torch on CPU is
  synchronous). Alternating keeps slow drifts of the machine's load out of the ratios. Each
  timed call follows `settle` untimed calls of the same function, so it is measured in its
  steady state, as in a training loop: measured right after another runtime's work, a step
  pays for that runtime's still-spinning worker threads and the caches it filled (17% on the
  nanoGPT-size step of the function that followed torch's), and after an idle pause for
  waking its own threads (50%).
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      for _ in range(settle):
        fn()
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def machine() -> dict:
  """What the numbers were measured on, including how loaded the machine was."""
  import jax

  device = jax.devices()[0]
  info = {"platform": jax.default_backend(), "device": getattr(device, "device_kind", str(device)),
          "devices": jax.device_count(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
          "python": platform.python_version(), "jax": jax.__version__, "host": platform.node(),
          "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
  try:
    import torch
    import transformers

    info.update(torch=torch.__version__, transformers=transformers.__version__,
                torch_threads=torch.get_num_threads())
  except ImportError:
    pass
  return info


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def table(rows: list[dict]) -> str:
  """A Markdown table of rows (columns in first-seen order)."""
  columns: list[str] = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  cell = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
  return "\n".join(lines)
