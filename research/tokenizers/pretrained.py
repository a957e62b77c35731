"""Loads the tokenizer that sits next to a Hugging Face checkpoint into our `Tokenizer`.

`load_file(path)` takes a directory or a file (research.tokenizers.load sends it everything
but a directory saved by `Tokenizer.save`, which it reloads exactly):
- a directory: `tokenizer.json` (the `tokenizers` library's format, preferred: it is what
  transformers' fast tokenizers use) or else `tokenizer.model` (SentencePiece);
- a file is loaded by its name: `*.json` as a `tokenizer.json`, `*.model` as SentencePiece.

Special-token roles come from the directory's tokenizer_config.json, overriding
special_tokens_map.json, overriding what the file itself declares (a SentencePiece model's
unk/bos/eos/pad ids) and finally the symbols' names (`</s>` is eos). Only what
`encode`/`decode` need is read: chat templates and transformers' post-processing (added
BOS) are not applied; the data pipeline adds BOS/EOS itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings

from research.config.data import ROLES
from research.tokenizers.base import META_FILE, Tokenizer
from research.tokenizers.hf_tokenizers import TOKENIZER_FILE, HFTokenizer
from research.tokenizers.spm import SentencePieceTokenizer

SP_FILE = "tokenizer.model"
# Files whose `<role>_token` entries name the special tokens, later ones overriding.
CONFIG_FILES = ("special_tokens_map.json", "tokenizer_config.json")


def load_file(path: str | os.PathLike) -> Tokenizer:
  """A sentencepiece `.model`, a `tokenizer.json`, or a directory holding one (with its
  Hugging Face tokenizer_config.json naming the special tokens), loaded as is."""
  path = pathlib.Path(path)
  if path.is_dir():
    directory = path
    if (path / TOKENIZER_FILE).is_file():
      tokenizer = HFTokenizer.from_file(path / TOKENIZER_FILE)
    elif (path / SP_FILE).is_file():
      tokenizer = SentencePieceTokenizer.from_file(path / SP_FILE)
    else:
      raise FileNotFoundError(
          f"{path} holds no {META_FILE}, {TOKENIZER_FILE} or {SP_FILE}; "
          f"contents: {sorted(p.name for p in path.iterdir())[:20]}"
      )
  elif path.is_file():
    directory = path.parent
    if path.suffix == ".json":
      tokenizer = HFTokenizer.from_file(path)
    elif path.suffix == ".model":
      tokenizer = SentencePieceTokenizer.from_file(path)
    else:
      raise ValueError(
          f"{path}: cannot tell the tokenizer format from the name; expected a "
          "tokenizer.json (*.json) or a SentencePiece model (*.model)")
  else:
    raise FileNotFoundError(f"no tokenizer at {path}: no such file or directory")
  roles = _configured_roles(directory, tokenizer)
  if roles:
    tokenizer.roles = {**tokenizer.roles, **roles}
  return tokenizer


def _configured_roles(directory: pathlib.Path, tokenizer: Tokenizer) -> dict[str, str]:
  """Role -> symbol from the Hugging Face config files in `directory`."""
  roles: dict[str, str] = {}
  specials = tokenizer.special_tokens()
  for name in CONFIG_FILES:
    file = directory / name
    if not file.is_file():
      continue
    config = json.loads(file.read_text(encoding="utf-8"))
    for role in ROLES:
      symbol = _symbol(config.get(f"{role}_token"))
      if symbol is None:
        continue
      if symbol not in specials:
        warnings.warn(
            f"{file}: {role}_token={symbol!r} is not a special token of the tokenizer; "
            f"ignored", stacklevel=3)
        continue
      roles[role] = symbol
  return roles


def _symbol(entry) -> str | None:
  """A `<role>_token` entry: a string, or a serialised AddedToken {"content": ...}."""
  if isinstance(entry, str):
    return entry
  if isinstance(entry, dict) and isinstance(entry.get("content"), str):
    return entry["content"]
  return None
