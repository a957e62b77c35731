"""Tokenizers behind one interface (`Tokenizer`): build from a config, save, load.

```python
from research import tokenizers
from research.config.data import TokenizerConfig

tok = tokenizers.build(TokenizerConfig(kind="sentencepiece_bpe", vocab_size=4096), "corpus.txt")
tok.save("run/tokenizer")
tok = tokenizers.load("run/tokenizer")
```
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable, Iterator

from research.config.data import TokenizerConfig
from research.tokenizers import char, hf_tokenizers, spm
from research.tokenizers.base import Tokenizer, read_meta
from research.tokenizers.char import CharTokenizer
from research.tokenizers.hf_tokenizers import HFTokenizer
from research.tokenizers.pretrained import load_file
from research.tokenizers.spm import SentencePieceTokenizer

__all__ = [
    "CharTokenizer", "HFTokenizer", "SentencePieceTokenizer", "Tokenizer", "build", "load",
    "load_file",
]

# kind -> trainer(cfg, texts).
TRAINERS: dict[str, Callable[[TokenizerConfig, Iterable[str]], Tokenizer]] = {
    "char": char.train,
    "sentencepiece_bpe": spm.train_bpe,
    "sentencepiece_unigram": spm.train_unigram,
    "bytelevel_bpe": hf_tokenizers.train_bytelevel_bpe,
    "wordpiece": hf_tokenizers.train_wordpiece,
}

# `Tokenizer.format` -> class, for `load`.
FORMATS: dict[str, type[Tokenizer]] = {
    cls.format: cls for cls in (CharTokenizer, SentencePieceTokenizer, HFTokenizer)
}

TextSource = str | os.PathLike | Iterable[str]


def _texts(source: TextSource) -> Iterator[str]:
  """The lines (each keeping its "\\n") of a file at a path or of the strings of an iterable.

  Trainers see lines either way, so a file and its text train the same tokenizer.
  """
  if isinstance(source, (str, os.PathLike)):
    # Split at "\n" only and keep any "\r", as str.split below does.
    with open(source, encoding="utf-8", newline="\n") as f:
      yield from f
  else:
    for text in source:
      lines = text.split("\n")
      yield from (line + "\n" for line in lines[:-1])
      if lines[-1]:
        yield lines[-1]


def build(cfg: TokenizerConfig, training_text: TextSource | None = None) -> Tokenizer:
  """Trains a tokenizer of `cfg.kind` on `training_text`, or loads `cfg.path` (kind "file").

  `training_text` is a path to a UTF-8 text file or an iterable of strings (pass `[text]`
  for one in-memory string: a bare `str` is taken as a path).
  """
  if cfg.kind == "file":
    # `load` reads a saved directory (a run's tokenizer/) and hands anything else to load_file.
    return load(cfg.path)
  if training_text is None:
    raise ValueError(f"TokenizerConfig.kind={cfg.kind!r} is trained: pass training text")
  return TRAINERS[cfg.kind](cfg, _texts(training_text))


def load(directory: str | os.PathLike) -> Tokenizer:
  """Reloads what `Tokenizer.save` wrote; any other directory or file goes to `load_file`."""
  directory = pathlib.Path(directory)
  meta = read_meta(directory) if directory.is_dir() else None
  if meta is None:
    return load_file(directory)
  cls = FORMATS.get(meta["format"])
  if cls is None:
    raise ValueError(
        f"{directory}: unknown tokenizer format {meta['format']!r}; known: {sorted(FORMATS)}")
  return cls._load_files(directory, meta["roles"])
