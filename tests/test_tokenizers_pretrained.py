"""research.tokenizers.load: tokenizers next to Hugging Face checkpoints (research/tokenizers/pretrained.py)."""

from __future__ import annotations

import functools
import json

import pytest

from research import tokenizers
from research.config.data import TokenizerConfig
from research.tokenizers import load as load_tokenizer
from tests.text_samples import ROUND_TRIP, corpus

transformers = pytest.importorskip("transformers")


@functools.lru_cache(maxsize=None)
def bytelevel() -> tokenizers.HFTokenizer:
  cfg = TokenizerConfig(kind="bytelevel_bpe", vocab_size=500,
                        special_tokens=("<|endoftext|>", "<|pad|>", "<|im_start|>"))
  return tokenizers.build(cfg, [corpus()])


@functools.lru_cache(maxsize=None)
def sentencepiece() -> tokenizers.SentencePieceTokenizer:
  return tokenizers.build(TokenizerConfig(kind="sentencepiece_bpe", vocab_size=500), [corpus()])


def test_hf_directory_matches_transformers(tmp_path):
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=bytelevel().backend, bos_token="<|endoftext|>",
      eos_token="<|endoftext|>", pad_token="<|pad|>")
  fast.save_pretrained(tmp_path)
  tok = load_tokenizer(tmp_path)
  assert tok.encode(ROUND_TRIP) == fast.encode(ROUND_TRIP, add_special_tokens=False)
  ids = tok.encode(ROUND_TRIP)
  assert tok.decode(ids) == fast.decode(ids) == ROUND_TRIP
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (
      fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (0, 0, 1)
  assert tok.vocab_size == len(fast)


def test_config_files_override_roles_by_name(tmp_path):
  bytelevel().save(tmp_path)
  (tmp_path / "tokenizer_meta.json").unlink()  # now a bare Hugging Face directory
  by_name = load_tokenizer(tmp_path)
  assert (by_name.bos_id, by_name.eos_id, by_name.pad_id) == (None, 0, 1)
  (tmp_path / "special_tokens_map.json").write_text(json.dumps(
      {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": {"content": "<|im_start|>", "special": True}, "pad_token": None}))
  tok = load_tokenizer(tmp_path)
  # tokenizer_config.json beats special_tokens_map.json, which beats the names.
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 2, 1)


def test_unknown_symbol_in_config_is_ignored_with_a_warning(tmp_path):
  bytelevel().save(tmp_path)
  (tmp_path / "tokenizer_meta.json").unlink()
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"mask_token": "<mask>"}))
  with pytest.warns(UserWarning, match="mask_token='<mask>' is not a special token"):
    tok = load_tokenizer(tmp_path)
  assert tok.mask_id is None


def test_sentencepiece_model_directory(tmp_path):
  sp = sentencepiece()
  (tmp_path / "tokenizer.model").write_bytes(sp.processor.serialized_model_proto())
  tok = load_tokenizer(tmp_path)
  assert isinstance(tok, tokenizers.SentencePieceTokenizer)
  assert tok.encode(ROUND_TRIP) == sp.encode(ROUND_TRIP)
  # Roles the model file declares.
  assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 3)
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "</s>"}))
  assert load_tokenizer(tmp_path).pad_id == 2
  assert load_tokenizer(tmp_path / "tokenizer.model").pad_id == 2


def test_tokenizer_json_is_preferred_over_tokenizer_model(tmp_path):
  bytelevel().save(tmp_path)
  (tmp_path / "tokenizer_meta.json").unlink()
  (tmp_path / "tokenizer.model").write_bytes(sentencepiece().processor.serialized_model_proto())
  assert isinstance(load_tokenizer(tmp_path), tokenizers.HFTokenizer)
  assert isinstance(load_tokenizer(tmp_path / "tokenizer.model"),
                    tokenizers.SentencePieceTokenizer)


def test_saved_research_tokenizer_is_reloaded_exactly(tmp_path):
  char = tokenizers.build(TokenizerConfig(), [corpus() + ROUND_TRIP])
  char.save(tmp_path)
  tok = load_tokenizer(tmp_path)
  assert isinstance(tok, tokenizers.CharTokenizer) and tok.fingerprint() == char.fingerprint()


def test_missing_tokenizer_errors_name_what_was_looked_for(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="tokenizer.json or tokenizer.model.*config.json"):
    load_tokenizer(tmp_path)
  with pytest.raises(FileNotFoundError, match="no such file or directory"):
    load_tokenizer(tmp_path / "absent")
  (tmp_path / "vocab.txt").write_text("a\nb\n")
  with pytest.raises(ValueError, match="cannot tell the tokenizer format"):
    load_tokenizer(tmp_path / "vocab.txt")
