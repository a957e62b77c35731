"""The benchmark dispatcher and every subcommand at the tiny size, so they cannot rot.

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


def _rows(tmp_path, name):
  assert main([name, "--size", "tiny", "--out", str(tmp_path)]) == 0
  result = json.loads((tmp_path / f"{name}-tiny.json").read_text())
  assert result["machine"]["jax"] and result["rows"]
  return result["rows"]


def test_train_steps_start_from_the_same_loss_as_torch(tmp_path):
  for row in _rows(tmp_path, "train"):
    assert row["first loss ours"] == pytest.approx(row["first loss torch"], rel=1e-4), row["config"]
    assert row["ours tokens/s"] > 0 and row["torch tokens/s"] > 0


def test_decode_produces_the_tokens_of_transformers_generate(tmp_path):
  assert all(row["same tokens"] for row in _rows(tmp_path, "decode"))


@pytest.mark.parametrize("name", ["peak", "compile"])
def test_other_benchmarks_write_their_rows(tmp_path, name):
  rows = _rows(tmp_path, name)
  assert all(v is not None for row in rows for v in row.values())


def test_every_subcommand_is_tested():
  assert set(bench.subcommands()) == {"attention", "inference", "train", "decode", "peak", "compile", "profile"}


def test_profile_benchmark_classifies_the_traced_ops(tmp_path, capsys):
  from experiments.bench.profile import op_class

  assert [op_class(n) for n in ("ynn_fusion.12", "dot.3", "transpose_copy_fusion.4", "wrapped_reduce-window.2",
                                "add_divide_fusion")] == ["matmul", "matmul", "layout", "reduce", "other"]
  rows = _run("profile", tmp_path, capsys)
  assert {(r["config"], r["stack"]) for r in rows} == {
      (c, s) for c in ("llama-tiny", "gpt2-tiny") for s in ("scanned", "unscanned")}
  for r in rows:  # the trace saw the step's ops, and the classes add up to their total
    assert r["ops/step"] > 50 and r["matmul ms"] > 0
    assert abs(sum(r[f"{c} ms"] for c in ("matmul", "layout", "reduce", "other")) - r["op ms"]) < 1e-6
