"""On-disk cache of trained tokenizers and tokenized splits, keyed by content hashes.

Every entry is a directory written under a temporary name and renamed into place, so a
reader never sees a partial entry and processes that build the same entry at once (hosts
sharing a cache) leave exactly one. Token arrays are `.npy` files, memory-mapped on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from research.data.documents import TokenizedSplit

_COMPLETE = "complete.json"


def key(**parts: Any) -> str:
  """A short hash of JSON-serialisable `parts`."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def is_complete(directory: pathlib.Path) -> bool:
  return (directory / _COMPLETE).is_file()


def write_atomic(directory: pathlib.Path, write: Callable[[pathlib.Path], None],
                 info: Mapping[str, Any]) -> bool:
  """Runs `write(tmp)` in a fresh temporary directory, then renames it to `directory`.

  Returns False (and discards its own copy) when another writer finished first.
  """
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  try:
    write(tmp)
    (tmp / _COMPLETE).write_text(json.dumps(dict(info), indent=2, sort_keys=True) + "\n")
    try:
      os.rename(tmp, directory)
    except OSError:
      if is_complete(directory):
        return False
      raise
    return True
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)


def save_splits(directory: pathlib.Path, splits: Mapping[str, TokenizedSplit],
                info: Mapping[str, Any]) -> bool:
  def write(tmp: pathlib.Path) -> None:
    for split, data in splits.items():
      for field, array in data.arrays().items():
        np.save(tmp / f"{split}.{field}.npy", np.ascontiguousarray(array))

  return write_atomic(directory, write, info)


def load_splits(directory: pathlib.Path, names: tuple[str, ...] = ("train", "val")
                ) -> dict[str, TokenizedSplit] | None:
  """The splits saved in `directory`, or None when there is no complete entry."""
  if not is_complete(directory):
    return None
  return {
      split: TokenizedSplit(**{
          field: np.load(directory / f"{split}.{field}.npy", mmap_mode="r")
          for field in ("tokens", "doc_starts", "answer")
      })
      for split in names
  }
