"""The benchmark commands run at their tiny size, so they cannot rot (no timing is asserted)."""

import json

import pytest

from experiments.bench import SUBCOMMANDS
from experiments.bench.__main__ import main


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
  assert {"train", "decode", "peak", "compile"} == set(SUBCOMMANDS) - {"attention", "inference"}


def test_unknown_size_is_an_error(tmp_path, capsys):
  with pytest.raises(SystemExit):
    main(["train", "--size", "huge", "--out", str(tmp_path)])
  assert "--size='huge' is not one of: tiny, cpu, full" in capsys.readouterr().err
