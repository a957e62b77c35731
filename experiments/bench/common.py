"""Shared pieces of the benchmarks: timing, the machine's description, tables and JSON."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable


def median_times(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, float]:
  """Median seconds per call of each function, calling them in turn `reps` times.

  Each function must block until its work is done (jax.block_until_ready, torch on CPU is
  synchronous). Alternating keeps slow drifts of the machine's load out of the ratios.
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def machine() -> dict[str, object]:
  import jax

  info = {
      "date": datetime.date.today().isoformat(),
      "cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
      "jax": jax.__version__, "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
  }
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


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
  return str(value)


def table(rows: list[dict]) -> str:
  """A Markdown table of `rows` (the union of their keys, in first-seen order)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def write(out_dir: str | os.PathLike, name: str, size: str, rows: list[dict]) -> pathlib.Path:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"{name}-{size}.json"
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps({"benchmark": name, "size": size, "machine": machine(), "rows": rows},
                            indent=2) + "\n")
  tmp.replace(path)
  return path
