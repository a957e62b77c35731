"""The benchmark dispatcher and its attention and inference subcommands, at the tiny size.

Timings are recorded, never asserted; what is asserted does not depend on the machine.
"""

import json

import pytest

from experiments import bench
from experiments.bench.__main__ import main, table


def _run(name, tmp_path, capsys):
  assert main([name, "--size", "tiny", "--out", str(tmp_path)]) == 0
  printed = capsys.readouterr().out
  record = json.loads((tmp_path / f"{name}-tiny.json").read_text())
  assert (tmp_path / f"{name}-tiny.md").read_text().strip() in printed
  assert record["machine"]["platform"] == "cpu" and record["size"] == "tiny"
  return record["rows"]


def test_subcommands_are_discovered():
  assert {"attention", "inference"} <= set(bench.subcommands())
  with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
    bench.load("nope")


def test_attention_benchmark(tmp_path, capsys):
  rows = _run("attention", tmp_path, capsys)
  assert {(r["backend"], r["L"]) for r in rows} == {(b, n) for b in ("xla", "chunked") for n in (128, 256)}
  assert all(r["ms"] is not None and r["ms"] > 0 for r in rows)
  peak = {(r["backend"], r["L"]): r["peak_mib"] for r in rows}
  # Compiled memory (not a timing): chunked grows slower than the L x L scores of xla.
  assert peak["chunked", 256] < peak["xla", 256]
  assert peak["xla", 256] / peak["xla", 128] > peak["chunked", 256] / peak["chunked", 128]


def test_inference_benchmark(tmp_path, capsys):
  rows = _run("inference", tmp_path, capsys)
  assert [r["method"] for r in rows] == ["no_cache", "contiguous", "paged"]
  assert all(r["same_tokens"] and r["tokens_per_s"] > 0 for r in rows)


def test_table_formats_missing_cells_and_floats():
  assert table([{"a": 1.23456, "b": None}, {"a": 2, "c": "x"}]).splitlines() == [
      "| a | b | c |", "|---|---|---|", "| 1.235 |  |  |", "| 2 |  | x |"]
