"""`profile`: where the train step's time goes, from a jax.profiler trace of the compiled step.

The `train` configs' steps (ours, scanned and unscanned) are traced for a few steps and every
op the XLA runtime ran is put in one class by its name (XLA:CPU names fusions after their
contents): matmuls (YNNPACK fusions and dots), layout copies (transposes, copies,
concatenations), reductions, and the other elementwise fusions. The columns are per step:
wall time (under the profiler, a few percent above the untraced step), the time the
runtime's threads spent running ops (summed over threads, so it can exceed the wall time),
its split by class, how busy the cores were (op time / (cores x wall): the rest is the
runtime waiting on dependencies and dispatching ops), the number of ops, and the matmul rate
(the model's FLOPs over the summed matmul time: one core's rate, to compare with the `peak`
ceiling divided by the cores).
This is the profile behind the Performance section's explanation of the CPU targets; on
accelerators the op names differ and everything lands in `other`.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import pathlib
import re
import tempfile
import time

import jax

from experiments.bench import train as train_bench
from experiments.bench._models import build_pair

SIZES = ("tiny", "cpu")
STEPS = {"tiny": 2, "cpu": 10}
# Trace events that are not ops: the runtime's own bookkeeping and Python frames.
_NOT_OPS = ("Thunk", "Pjit", "PjRt", "Slinky", "ParseArguments", "Handle inputs", "Allocate",
            "np.asarray", "end: ")
# Control flow whose events contain the ops of its body (counted there).
_CONTAINERS = re.compile(r"(while|cond|conditional|call)(\.\d+)?")
CLASSES = ("matmul", "layout", "reduce", "other")


def op_class(name: str) -> str:
  """The class of an XLA:CPU op from its name (ynn_fusion.3, transpose_copy_fusion, ...)."""
  if name.startswith(("ynn_fusion", "xnn_fusion", "onednn", "dot")) or "dot_fusion" in name:
    return "matmul"
  if re.search(r"transpose|copy|concatenate", name):
    return "layout"
  if "reduce" in name:
    return "reduce"
  return "other"


def summarize(trace_events: list[dict], steps: int, wall_s: float) -> dict:
  """Per-step op time by class, core busyness and op count from Chrome-trace events."""
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace_events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  per_class = collections.Counter()
  count = 0
  for e in trace_events:
    if (e.get("ph") != "X" or e["name"].startswith("$") or any(s in e["name"] for s in _NOT_OPS)
        or _CONTAINERS.fullmatch(e["name"])):
      continue
    if "python" in threads.get((e["pid"], e["tid"]), "python"):
      continue
    per_class[op_class(e["name"])] += e["dur"] * 1e-6
    count += 1
  busy = sum(per_class.values())
  return {"wall ms": wall_s / steps * 1e3, "op ms": busy / steps * 1e3,
          **{f"{c} ms": per_class[c] / steps * 1e3 for c in CLASSES},
          "cores busy": busy / (os.cpu_count() or 1) / wall_s,
          "ops/step": count / steps}


def _trace(fn, steps: int) -> tuple[list[dict], float]:
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(steps):
        fn()
      wall = time.perf_counter() - start
    path = next(pathlib.Path(tmp).rglob("*.trace.json.gz"))
    return json.loads(gzip.open(path).read())["traceEvents"], wall


def run(size: str, reps: int | None = None) -> list[dict]:
  steps = reps or STEPS[size]
  specs = train_bench.SIZES[size]["specs"]
  if size == "cpu":
    specs = [s for s in specs if s.name in ("llama-nanogpt", "llama-512")]
  rows = []
  for spec in specs:
    batch = train_bench._batch(spec)
    for form, scan in (("scanned", True), ("unscanned", False)):
      _, model, params = build_pair(spec, scan_layers=scan)
      fn = train_bench.ours(model, params, batch)
      for _ in range(2):  # compile and warm up outside the trace
        fn()
      events, wall = _trace(fn, steps)
      row = {"config": spec.name, "stack": form, **summarize(events, steps, wall)}
      flops = model.cfg.flops_per_token(spec.seq_len) * spec.batch * spec.seq_len
      row["matmul GFLOP/s per core"] = (flops / (row["matmul ms"] * 1e-3) / 1e9
                                          if row["matmul ms"] else None)
      rows.append(row)
  return rows
