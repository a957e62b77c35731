"""Benchmarks: `python -m experiments.bench SUBCOMMAND [--size tiny|cpu|full] [--out DIR]`.

Every module in this package that defines `run(size: str) -> list[dict]` is a subcommand,
named after the module (`attention.py` -> `attention`); its docstring's first line is the
description `--help` shows. `run` returns the rows of one table (dicts with the same keys);
the dispatcher prints them and writes them as JSON next to a Markdown copy. Sizes:

  tiny  seconds, for tests and CI (timings meaningless)
  cpu   what a laptop-class CPU measures in minutes
  full  accelerator sizes

A module may define `SIZES` (the sizes it supports) and `NOTES` (a line printed under the
table, e.g. what was not measured).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

SIZES = ("tiny", "cpu", "full")


def subcommands() -> list[str]:
  """Names of the benchmark modules of this package (any module not starting with _)."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> ModuleType:
  if name not in subcommands():
    raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(subcommands())}")
  module = importlib.import_module(f"{__name__}.{name}")
  if not callable(getattr(module, "run", None)):
    raise ValueError(f"experiments.bench.{name} defines no run(size) function")
  return module
