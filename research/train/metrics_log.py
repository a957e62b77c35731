"""Where metrics go: `metrics.jsonl` and TensorBoard event files in the run directory, a
console line every log interval, and a progress bar with ETA when the console is a TTY."""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from typing import Any

import numpy as np

from research.train.tensorboard import EventWriter


def _scalars(metrics: dict[str, Any]) -> dict[str, float | list[float]]:
  out = {}
  for k, v in metrics.items():
    a = np.asarray(v)
    out[k] = float(a) if a.ndim == 0 else a.astype(float).tolist()
  return out


class MetricsWriter:
  """Appends metrics to metrics.jsonl and TensorBoard; a disabled writer (every process but
  the first of a multi-host run) formats values but writes nothing."""

  def __init__(self, run_dir: pathlib.Path, tensorboard: bool = True, enabled: bool = True):
    self.path = pathlib.Path(run_dir) / "metrics.jsonl"
    self.enabled = enabled
    self.tb = None
    if tensorboard and enabled:
      self.tb = EventWriter(pathlib.Path(run_dir) / "tensorboard")

  def truncate_after(self, step: int) -> None:
    """Drops records past `step`: a resumed run rewrites them, so the curve has no duplicates."""
    if not self.enabled or not self.path.exists():
      return
    kept = [line for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(self.path)

  def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    values = {f"{prefix}{k}": v for k, v in _scalars(metrics).items()}
    if not self.enabled:
      return values
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **values}) + "\n")
    if self.tb is not None:
      for k, v in values.items():
        if isinstance(v, list):
          for i, x in enumerate(v):
            self.tb.scalar(f"{k}/{i}", x, step)
        else:
          self.tb.scalar(k, v, step)
      self.tb.flush()
    return values

  def write_text(self, step: int, tag: str, text: str) -> None:
    if self.tb is not None:
      self.tb.text(tag, text, step)
      self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def read_metrics(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
  path = pathlib.Path(run_dir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_line(step: int, total: int, values: dict[str, Any]) -> str:
  parts = [f"step {step}/{total}"]
  for key, fmt in (("loss", ".4f"), ("eval_loss", ".4f"), ("exact_match", ".1%"),
                   ("eval_exact_match", ".1%"), ("grad_norm", ".3f"), ("lr", ".2e"),
                   ("tokens_per_s", ",.0f"), ("mfu", ".1%"), ("skipped_total", "d")):
    if key in values and not (isinstance(values[key], float) and math.isnan(values[key])):
      v = int(values[key]) if fmt == "d" else values[key]
      parts.append(f"{key} {v:{fmt}}")
  if "ppl" in values:
    parts.append(f"ppl {values['ppl']:.2f}")
  return " | ".join(parts)


class Progress:
  """A one-line progress bar with ETA on a TTY; silent otherwise (log lines cover it)."""

  def __init__(self, total: int, start: int, enabled: bool = True, stream=sys.stderr):
    self.total, self.start, self.stream = total, start, stream
    self.enabled = enabled and stream.isatty()
    self.t0 = time.perf_counter()

  def update(self, step: int) -> None:
    if not self.enabled:
      return
    done = step - self.start
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / done * (self.total - step) if done else 0.0
    width = 30
    filled = int(width * step / max(self.total, 1))
    self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} "
                      f"eta {int(eta) // 60}m{int(eta) % 60:02d}s ")
    self.stream.flush()

  def clear(self) -> None:
    if self.enabled:
      self.stream.write("\r" + " " * 70 + "\r")
      self.stream.flush()
