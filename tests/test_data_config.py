"""research.config.data: DataConfig / SyntheticConfig validation and serialisation."""

from __future__ import annotations

import pathlib

import pytest

from research.config.data import DataConfig, SyntheticConfig, TokenizerConfig


def test_defaults_are_tinyshakespeare_with_characters():
  cfg = DataConfig()
  assert (cfg.dataset, cfg.tokenizer.kind, cfg.pack, cfg.loss_on) == (
      "tinyshakespeare", "char", True, "all")
  assert cfg.source_name == "tinyshakespeare"
  assert DataConfig(path="/tmp/x.txt").source_name == "/tmp/x.txt"


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss_on="prompt"), r"DataConfig.loss_on='prompt' is not allowed; choose one of: "
                             r"'all', 'answer'"),
    (dict(seq_len=0), r"DataConfig.seq_len=0 must be > 0"),
    (dict(batch_size=-8), r"DataConfig.batch_size=-8 must be > 0"),
    (dict(val_fraction=1.0), r"DataConfig.val_fraction=1.0 must lie in \[0.0, 0.99\]"),
    (dict(dataset="", path=None), r"DataConfig.dataset is empty"),
    (dict(tokenizer={"kind": "char"}), r"DataConfig.tokenizer must be a TokenizerConfig"),
])
def test_data_config_errors_name_field_value_and_allowed(kwargs, match):
  with pytest.raises(ValueError, match=match):
    DataConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_len=5, max_len=4), r"SyntheticConfig.min_len=5 must be <= SyntheticConfig.max_len=4"),
    (dict(val_min_len=20), r"val_min_len=20 must be <= SyntheticConfig.val_max_len=16"),
    (dict(alphabet=27), r"SyntheticConfig.alphabet=27 must lie in \[2, 26\]"),
    (dict(num_examples=0), r"SyntheticConfig.num_examples=0 must be > 0"),
])
def test_synthetic_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    SyntheticConfig(**kwargs)


def test_lengths_default_to_training_lengths():
  cfg = SyntheticConfig(min_len=2, max_len=8, val_max_len=16)
  assert cfg.lengths() == (2, 8) and cfg.lengths(val=True) == (2, 16)


def test_dict_round_trip_and_unknown_keys():
  cfg = DataConfig(
      dataset="synthetic_mix", seq_len=128, loss_on="answer",
      tokenizer=TokenizerConfig(kind="sentencepiece_unigram", vocab_size=1000,
                                special_tokens=("<unk>", "<s>", "</s>", "<pad>", "<sep>")),
      synthetic=SyntheticConfig(num_examples=100, val_max_len=32))
  as_dict = cfg.to_dict()
  as_dict["tokenizer"]["special_tokens"] = list(as_dict["tokenizer"]["special_tokens"])  # JSON
  assert DataConfig.from_dict(as_dict) == cfg
  with pytest.raises(ValueError, match=r"DataConfig has no field 'seqlen' \(did you mean seq_len"):
    DataConfig.from_dict({"seqlen": 3})
  with pytest.raises(ValueError, match=r"TokenizerConfig has no field 'vocab'"):
    DataConfig.from_dict({"tokenizer": {"vocab": 3}})


def test_cache_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.delenv("RESEARCH_CACHE_DIR", raising=False)
  assert DataConfig().resolved_cache_dir() == pathlib.Path.home() / ".cache" / "research"
  monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path / "env"))
  assert DataConfig().resolved_cache_dir() == tmp_path / "env"
  assert DataConfig(cache_dir=str(tmp_path / "x")).resolved_cache_dir() == tmp_path / "x"
