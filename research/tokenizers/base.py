"""`Tokenizer`: the one interface over every tokenizer kind, and its saved form.

A tokenizer maps text to ids and back. `encode` never adds special tokens (the data
pipeline adds BOS/EOS itself) and `decode` renders special tokens as their symbols, so
`decode(encode(text)) == text` wherever the kind is lossless. Special tokens play roles
(pad, bos, eos, unk, sep, mask, cls) recorded by symbol; `pad_id` and friends are the ids of
those symbols, None where the tokenizer has no such token.

`save(directory)` writes the kind's own file(s) plus `tokenizer_meta.json` (the format and
the roles), which `research.tokenizers.load` reads back.
"""

from __future__ import annotations

import abc
import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np

from research.config.data import ROLES, role_of

META_FILE = "tokenizer_meta.json"
META_VERSION = 1


class Tokenizer(abc.ABC):
  """Text <-> ids. Subclasses implement the abstract methods; roles live here."""

  # How `save` stores it, the key `research.tokenizers.load` dispatches on.
  format: ClassVar[str]

  def __init__(self, roles: Mapping[str, str]):
    unknown = set(roles) - set(ROLES)
    if unknown:
      raise ValueError(f"unknown special-token roles {sorted(unknown)}; roles: {ROLES}")
    specials = self.special_tokens()
    missing = {r: s for r, s in roles.items() if s not in specials}
    if missing:
      raise ValueError(f"role symbols {missing} are not special tokens of this tokenizer")
    self.roles = dict(roles)

  # ------------------------------------------------------------------ the interface

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """One more than the largest id: the embedding table's number of rows."""

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, without any added special tokens."""

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, special tokens rendered as their symbols."""

  @abc.abstractmethod
  def special_tokens(self) -> dict[str, int]:
    """Symbol -> id of every special token."""

  @abc.abstractmethod
  def _save_files(self, directory: pathlib.Path) -> None:
    """Writes the kind's own files into `directory`."""

  @classmethod
  @abc.abstractmethod
  def _load_files(cls, directory: pathlib.Path, roles: Mapping[str, str]) -> "Tokenizer":
    """Reads back what `_save_files` wrote."""

  @abc.abstractmethod
  def _serialized(self) -> bytes:
    """Bytes that determine the tokenizer's behaviour (for `fingerprint`)."""

  # -------------------------------------------------------------- shared behaviour

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def encode_array(self, text: str) -> np.ndarray:
    """`encode` as an int32 array (vectorised where the kind allows)."""
    return np.asarray(self.encode(text), dtype=np.int32)

  def role_id(self, role: str) -> int | None:
    symbol = self.roles.get(role)
    return None if symbol is None else self.special_tokens()[symbol]

  @property
  def pad_id(self) -> int | None:
    return self.role_id("pad")

  @property
  def bos_id(self) -> int | None:
    return self.role_id("bos")

  @property
  def eos_id(self) -> int | None:
    return self.role_id("eos")

  @property
  def unk_id(self) -> int | None:
    return self.role_id("unk")

  @property
  def sep_id(self) -> int | None:
    return self.role_id("sep")

  @property
  def mask_id(self) -> int | None:
    return self.role_id("mask")

  @property
  def cls_id(self) -> int | None:
    return self.role_id("cls")

  def save(self, directory: str | pathlib.Path) -> pathlib.Path:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self._save_files(directory)
    meta = {"version": META_VERSION, "format": self.format, "roles": self.roles}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory

  def fingerprint(self) -> str:
    """Hash of everything that decides the ids: equal fingerprints encode alike."""
    h = hashlib.sha256()
    h.update(self.format.encode())
    h.update(json.dumps(self.roles, sort_keys=True).encode())
    h.update(self._serialized())
    return h.hexdigest()[:24]

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(vocab_size={self.vocab_size}, "
            f"roles={self.roles}, fingerprint={self.fingerprint()})")


def roles_by_name(symbols: Iterable[str]) -> dict[str, str]:
  """Role -> symbol for the symbols whose names say their role (first one wins)."""
  roles: dict[str, str] = {}
  for symbol in symbols:
    role = role_of(symbol)
    if role is not None and role not in roles:
      roles[role] = symbol
  return roles


def read_meta(directory: pathlib.Path) -> dict | None:
  path = directory / META_FILE
  if not path.is_file():
    return None
  meta = json.loads(path.read_text())
  if meta.get("version") != META_VERSION:
    raise ValueError(f"{path}: version {meta.get('version')!r}, expected {META_VERSION}")
  return meta
