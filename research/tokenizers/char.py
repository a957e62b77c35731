"""Character-level tokenizer: one id per Unicode character of the training corpus.

Special tokens take ids 0..k-1, the corpus's characters follow sorted by code point (the
order of nanoGPT's char model: Tiny Shakespeare has 65 characters). Special symbols are
never matched inside text: `encode("<s>")` is three characters. Encoding is vectorised over
UTF-32 code points, so a megabyte encodes in milliseconds.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping

import numpy as np

from research.config.data import TokenizerConfig
from research.tokenizers.base import Tokenizer, roles_by_name

VOCAB_FILE = "char_vocab.json"


def _code_points(text: str) -> np.ndarray:
  return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class CharTokenizer(Tokenizer):
  format = "char"

  def __init__(self, chars: str, specials: tuple[str, ...], roles: Mapping[str, str]):
    points = _code_points(chars)
    if len(np.unique(points)) != len(points) or np.any(np.diff(points.astype(np.int64)) <= 0):
      raise ValueError("chars must be distinct and sorted by code point")
    self._chars = chars
    self._specials = tuple(specials)
    self._points = points
    self._itos = list(self._specials) + list(chars)
    super().__init__(roles)

  @property
  def vocab_size(self) -> int:
    return len(self._itos)

  @property
  def chars(self) -> str:
    return self._chars

  def encode(self, text: str) -> list[int]:
    return self.encode_array(text).tolist()

  def encode_array(self, text: str) -> np.ndarray:
    points = _code_points(text)
    pos = np.searchsorted(self._points, points)
    found = (pos < len(self._points)) & (self._points[np.minimum(pos, len(self._points) - 1)]
                                         == points)
    if not found.all():
      missing = sorted({chr(c) for c in points[~found][:1000]})
      raise ValueError(
          f"characters outside the vocabulary: {missing[:10]!r}"
          + (" ..." if len(missing) > 10 else "")
          + "; a char tokenizer only knows the characters of the corpus it was built from"
      )
    return (pos + len(self._specials)).astype(np.int32)

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    texts = list(texts)
    # One vectorised pass over the concatenation; characters map one-to-one onto ids.
    flat = self.encode_array("".join(texts))
    cuts = np.cumsum([len(t) for t in texts])[:-1]
    return [part.tolist() for part in np.split(flat, cuts)]

  def decode(self, ids: Iterable[int]) -> str:
    itos = self._itos
    return "".join(itos[int(i)] for i in ids)

  def special_tokens(self) -> dict[str, int]:
    return {s: i for i, s in enumerate(self._specials)}

  def _serialized(self) -> bytes:
    return json.dumps({"specials": self._specials, "chars": self._chars}).encode()

  def _save_files(self, directory: pathlib.Path) -> None:
    (directory / VOCAB_FILE).write_text(
        json.dumps({"specials": list(self._specials), "chars": self._chars},
                   ensure_ascii=True, indent=1) + "\n")

  @classmethod
  def _load_files(cls, directory: pathlib.Path, roles: Mapping[str, str]) -> "CharTokenizer":
    vocab = json.loads((directory / VOCAB_FILE).read_text())
    return cls(vocab["chars"], tuple(vocab["specials"]), roles)


def train(cfg: TokenizerConfig, texts: Iterable[str]) -> CharTokenizer:
  """The vocabulary is every character of `texts`, plus `cfg`'s special tokens."""
  seen: set[str] = set()
  for text in texts:
    seen.update(text)
  chars = "".join(sorted(seen))  # single characters sort by code point
  specials = cfg.specials()
  return CharTokenizer(chars, specials, roles_by_name(specials))
