"""Tokenizers from the Hugging Face `tokenizers` library: byte-level BPE, WordPiece, and
any `tokenizer.json`.

- Byte-level BPE (GPT-2, Radford et al. 2019; RoBERTa): text is mapped to bytes, each byte
  to a printable stand-in character, and BPE merges are learned over those; every string
  round-trips exactly and no unknown token is needed. No prefix space is added (GPT-2's
  choice), so a leading space stays a real space.
- WordPiece (BERT, Devlin et al. 2019): lossy by design. The BERT normaliser and
  pre-tokeniser drop whitespace (words and punctuation are decoded joined by single spaces,
  CJK characters are split apart), characters outside the vocabulary become [UNK], and
  `lowercase` folds case. What it does guarantee: `encode(decode(ids)) == ids`. The decoder's
  cleanup (" ." -> ".", " do not" -> " don't") is off, since it changes the tokens.

Trained here, special token i gets id i. Special tokens are "added tokens": matched inside
text and rendered by `decode`, so the round trip stays exact when text contains their
symbols.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from research.config.data import TokenizerConfig
from research.tokenizers.base import Tokenizer, roles_by_name

TOKENIZER_FILE = "tokenizer.json"
_PREFIX = "##"


class HFTokenizer(Tokenizer):
  format = "huggingface"

  def __init__(self, tokenizer: tokenizers.Tokenizer, roles: Mapping[str, str] | None = None):
    self._tok = tokenizer
    self._specials = {
        t.content: i for i, t in sorted(tokenizer.get_added_tokens_decoder().items())
        if t.special
    }
    self._size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
    super().__init__(roles_by_name(self._specials) if roles is None else roles)

  @classmethod
  def from_file(cls, path: str | pathlib.Path,
                roles: Mapping[str, str] | None = None) -> "HFTokenizer":
    return cls(tokenizers.Tokenizer.from_file(str(path)), roles)

  @property
  def vocab_size(self) -> int:
    return self._size

  @property
  def backend(self) -> tokenizers.Tokenizer:
    return self._tok

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def special_tokens(self) -> dict[str, int]:
    return dict(self._specials)

  def _serialized(self) -> bytes:
    return self._tok.to_str().encode()

  def _save_files(self, directory: pathlib.Path) -> None:
    self._tok.save(str(directory / TOKENIZER_FILE), pretty=True)

  @classmethod
  def _load_files(cls, directory: pathlib.Path, roles: Mapping[str, str]) -> "HFTokenizer":
    return cls.from_file(directory / TOKENIZER_FILE, roles)


def train_bytelevel_bpe(cfg: TokenizerConfig, texts: Iterable[str]) -> HFTokenizer:
  specials = list(cfg.specials())
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=cfg.vocab_size,
      special_tokens=specials,
      # All 256 byte stand-ins, seen in the corpus or not: any input stays encodable.
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tok.train_from_iterator(texts, trainer)
  return HFTokenizer(tok, roles_by_name(specials))


def train_wordpiece(cfg: TokenizerConfig, texts: Iterable[str]) -> HFTokenizer:
  texts = list(texts)
  specials = list(cfg.specials())
  unk = roles_by_name(specials)["unk"]
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token=unk))
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=False,
      lowercase=cfg.lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix=_PREFIX, cleanup=False)
  # The trainer numbers the "##c" continuation pieces as it meets them in hash-map order,
  # which changes from run to run, and its merges break count ties by those numbers. Handing
  # it every "##c" up front, sorted, as (temporary) special tokens fixes their numbers, and
  # with them the whole training.
  continuations = [_PREFIX + c for c in sorted(_continuation_chars(tok, texts))]
  continuations = [c for c in continuations if c not in specials]
  trainer = trainers.WordPieceTrainer(
      vocab_size=cfg.vocab_size, special_tokens=specials + continuations,
      continuing_subword_prefix=_PREFIX, show_progress=False)
  tok.train_from_iterator(texts, trainer)
  spec = json.loads(tok.to_str())
  # They stay in the vocabulary, as ordinary pieces.
  spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in specials]
  return HFTokenizer(tokenizers.Tokenizer.from_str(json.dumps(spec)), roles_by_name(specials))


def _continuation_chars(tok: tokenizers.Tokenizer, texts: list[str]) -> set[str]:
  """Characters that occur past the first of a pre-tokenised word."""
  chars: set[str] = set()
  words = tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str("".join(texts)))
  for word, _ in words:
    chars.update(word[1:])
  return chars
