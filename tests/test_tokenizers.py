"""Tokenizers: lossless round trips, special-token ids, save/load, deterministic training."""

from __future__ import annotations

import functools
import os
import pathlib

import numpy as np
import pytest

from research import tokenizers
from research.config.data import DEFAULT_SPECIAL_TOKENS, TokenizerConfig
from tests.text_samples import ROUND_TRIP, corpus

LOSSLESS = {
    "sentencepiece_bpe": TokenizerConfig(kind="sentencepiece_bpe", vocab_size=600),
    "sentencepiece_unigram": TokenizerConfig(kind="sentencepiece_unigram", vocab_size=600),
    "bytelevel_bpe": TokenizerConfig(kind="bytelevel_bpe", vocab_size=600),
}
WORDPIECE = TokenizerConfig(kind="wordpiece", vocab_size=600)
CUSTOM_SPECIALS = ("<unk>", "<pad>", "<s>", "</s>", "<sep>", "<mask>", "<|user|>")


@functools.lru_cache(maxsize=None)
def trained(cfg: TokenizerConfig) -> tokenizers.Tokenizer:
  # The char vocabulary must cover the round-trip text; the others meet it unseen.
  text = corpus() + (ROUND_TRIP if cfg.kind == "char" else "")
  return tokenizers.build(cfg, [text])


ALL = {"char": TokenizerConfig(), **LOSSLESS, "wordpiece": WORDPIECE}


@pytest.mark.parametrize("kind", ["char", *LOSSLESS])
def test_round_trip_is_lossless(kind):
  tok = trained(ALL[kind])
  ids = tok.encode(ROUND_TRIP)
  assert tok.decode(ids) == ROUND_TRIP
  for line in ROUND_TRIP.splitlines(keepends=True):
    assert tok.decode(tok.encode(line)) == line
  assert tok.decode(tok.encode(" ")) == " " and tok.encode("") == []


@pytest.mark.parametrize("kind", ["sentencepiece_bpe", "sentencepiece_unigram"])
def test_sentencepiece_unseen_characters_fall_back_to_bytes(kind):
  tok = trained(ALL[kind])
  ids = tok.encode("🙂")
  assert tok.unk_id not in ids and len(ids) == 4  # the emoji's four UTF-8 bytes
  no_fallback = tokenizers.build(
      TokenizerConfig(kind=kind, vocab_size=300, byte_fallback=False), [corpus()])
  assert no_fallback.encode("🙂") == [no_fallback.unk_id]


def test_tokenizers_compress_the_corpus():
  text = corpus(1)
  for kind in LOSSLESS:
    # Characters (bytes, for Chinese, before merging) are far more than the tokens.
    assert len(trained(ALL[kind]).encode(text)) < 0.7 * len(text), kind


def test_wordpiece_guarantees():
  tok = trained(WORDPIECE)
  # Lossy by design: whitespace collapses and punctuation/CJK characters stand apart ...
  assert tok.decode(tok.encode("the   quick\n\n brown\tfox")) == "the quick brown fox"
  assert tok.decode(tok.encode("我们今天")) == "我 们 今 天"
  assert tok.decode(tok.encode("Ω")) == "[UNK]"
  # ... but decoded text always re-encodes to the same ids.
  ids = tok.encode(ROUND_TRIP)
  assert tok.unk_id in ids
  assert tok.encode(tok.decode(ids)) == ids
  # Case is kept unless asked otherwise.
  assert tok.decode(tok.encode("The Numbers")) == "The Numbers"
  lower = tokenizers.build(TokenizerConfig(kind="wordpiece", vocab_size=600, lowercase=True),
                           [corpus()])
  assert lower.decode(lower.encode("The Numbers")) == "the numbers"


@pytest.mark.parametrize("kind", list(ALL))
def test_default_special_tokens_take_the_first_ids(kind):
  tok = trained(ALL[kind])
  specials = DEFAULT_SPECIAL_TOKENS[kind]
  assert {s: tok.special_tokens()[s] for s in specials} == {s: i for i, s in enumerate(specials)}
  expected = {
      "char": dict(pad_id=0, bos_id=1, eos_id=2, unk_id=None, sep_id=None),
      "sentencepiece_bpe": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=3, mask_id=None),
      "sentencepiece_unigram": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=3, cls_id=None),
      "bytelevel_bpe": dict(bos_id=0, pad_id=1, eos_id=2, mask_id=3, unk_id=None),
      "wordpiece": dict(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4, eos_id=None),
  }[kind]
  assert {name: getattr(tok, name) for name in expected} == expected
  # Plain text never yields special ids (the symbols are not in it).
  assert not set(tok.encode(corpus(1))) & set(tok.special_tokens().values())


@pytest.mark.parametrize("kind", ["char", *LOSSLESS, "wordpiece"])
def test_custom_special_tokens_have_their_ids_and_roles(kind):
  specials = CUSTOM_SPECIALS if kind != "wordpiece" else ("[UNK]", "<pad>", "<|user|>", "[SEP]")
  cfg = TokenizerConfig(kind=kind, special_tokens=specials,
                        vocab_size=None if kind == "char" else 600)
  tok = tokenizers.build(cfg, [corpus()])
  assert [tok.special_tokens()[s] for s in specials] == list(range(len(specials)))
  if kind != "wordpiece":
    assert (tok.unk_id, tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id, tok.mask_id) == (
        0, 1, 2, 3, 4, 5)
    assert tok.decode([tok.bos_id, *tok.encode("hi"), tok.eos_id]) == "<s>hi</s>"
  else:
    assert (tok.unk_id, tok.pad_id, tok.sep_id, tok.eos_id) == (0, 1, 3, None)
  if kind in ("sentencepiece_bpe", "sentencepiece_unigram", "bytelevel_bpe"):
    # User-defined symbols are matched in text, so chat markers stay one token.
    assert tok.encode("<|user|>") == [6]
    assert tok.decode(tok.encode("a<|user|>b")) == "a<|user|>b"


@pytest.mark.parametrize("kind", list(ALL))
def test_save_then_load_encodes_identically(kind, tmp_path):
  tok = trained(ALL[kind])
  tok.save(tmp_path / "tok")
  back = tokenizers.load(tmp_path / "tok")
  assert type(back) is type(tok)
  assert back.fingerprint() == tok.fingerprint()
  assert back.roles == tok.roles and back.special_tokens() == tok.special_tokens()
  assert back.vocab_size == tok.vocab_size
  assert back.encode(ROUND_TRIP) == tok.encode(ROUND_TRIP)
  assert back.decode(tok.encode(ROUND_TRIP)) == tok.decode(tok.encode(ROUND_TRIP))


@pytest.mark.parametrize("kind", list(ALL))
def test_training_is_deterministic(kind):
  cfg = ALL[kind]
  text = corpus() + (ROUND_TRIP if kind == "char" else "")
  again = tokenizers.build(cfg, [text])
  assert again.fingerprint() == trained(cfg).fingerprint()


def test_training_from_a_file_equals_training_from_its_text(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text(corpus(), encoding="utf-8")
  for cfg in (TokenizerConfig(), LOSSLESS["sentencepiece_bpe"], LOSSLESS["bytelevel_bpe"]):
    from_file = tokenizers.build(cfg, str(path))
    assert from_file.encode(corpus(1)) == tokenizers.build(cfg, [corpus()]).encode(corpus(1))


def test_char_vectorised_encoding_matches_a_lookup():
  tok = trained(TokenizerConfig())
  table = {c: i + 3 for i, c in enumerate(sorted(set(corpus() + ROUND_TRIP)))}
  assert tok.encode(ROUND_TRIP) == [table[c] for c in ROUND_TRIP]
  assert tok.encode_batch(["ab", "", "我们"]) == [tok.encode("ab"), [], tok.encode("我们")]
  with pytest.raises(ValueError, match="outside the vocabulary.*'€'"):
    tok.encode("price: 5€")


def test_char_tokenizer_on_tinyshakespeare_has_nanogpt_vocabulary():
  data_dir = os.environ.get("RESEARCH_DATA_DIR")
  path = pathlib.Path(data_dir or "/nonexistent") / "tinyshakespeare.txt"
  if not path.is_file():
    pytest.skip("RESEARCH_DATA_DIR holds no tinyshakespeare.txt")
  text = path.read_text()
  tok = tokenizers.build(TokenizerConfig(), str(path))
  chars = sorted(set(text))
  assert len(chars) == 65 and tok.vocab_size == 65 + 3
  # nanoGPT's ids shifted past the three special tokens.
  ids = tok.encode_array(text)
  np.testing.assert_array_equal(ids[:1000], [chars.index(c) + 3 for c in text[:1000]])
  assert tok.decode(ids) == text


def test_kind_file_loads_a_model_or_tokenizer_json(tmp_path):
  for kind in ("sentencepiece_bpe", "bytelevel_bpe"):
    tok = trained(ALL[kind])
    tok.save(tmp_path / kind)
    name = "tokenizer.model" if kind.startswith("sentencepiece") else "tokenizer.json"
    for path in (tmp_path / kind / name, tmp_path / kind):
      loaded = tokenizers.build(TokenizerConfig(kind="file", path=str(path)))
      assert loaded.encode(ROUND_TRIP) == tok.encode(ROUND_TRIP)
      assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="bpe"), r"TokenizerConfig.kind='bpe' is not allowed; choose one of: 'char'"),
    (dict(kind="sentencepiece_bpe"), r"TokenizerConfig.vocab_size is required"),
    (dict(kind="char", vocab_size=100), r"vocab_size=100 does not apply to kind='char'"),
    (dict(kind="bytelevel_bpe", vocab_size=200), r"vocab_size=200 is too small.*256 byte"),
    (dict(kind="file"), r"TokenizerConfig.path is required for kind='file'"),
    (dict(kind="char", path="x.model"), r"path='x.model' only applies to kind='file'"),
    (dict(kind="sentencepiece_unigram", vocab_size=500, special_tokens=("<s>", "</s>")),
     r"needs an unknown-token symbol"),
    (dict(special_tokens=("<pad>", "<pad>")), r"duplicates"),
    (dict(special_tokens=("</s>", "<eos>")), r"several eos symbols"),
])
def test_config_errors_name_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    TokenizerConfig(**kwargs)
