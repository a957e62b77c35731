"""`save_pretrained` directories on disk: config.json plus safetensors, whole or sharded.

Reading is lazy (shapes come from the safetensors headers; a tensor's bytes are read when
asked for) so a converter can check every shape before it copies anything. Writing goes to
a temporary directory beside the target that is renamed into place only once complete, so an
interrupted save never leaves a half-written checkpoint. Pickled weights are never opened.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from research.hf import errors

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# transformers refuses a safetensors file whose metadata lacks a known framework.
_METADATA = {"format": "pt"}
_PICKLE_PATTERNS = ("*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# Files of an old checkpoint that a new save replaces; anything else (tokenizer files, a
# README, generation_config.json) is carried over when a directory is overwritten.
_REPLACED = re.compile(
    r"^(config\.json|.*\.safetensors|.*\.safetensors\.index\.json|pytorch_model.*)$")

_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
  """Bytes in `size`: an int, or digits and a unit like transformers' max_shard_size ('5GB')."""
  if isinstance(size, int):
    return size
  match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)\s*", size.upper())
  if not match:
    raise ValueError(f"max_shard_size={size!r}: expected bytes or digits and a unit like '5GB'")
  return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


class Checkpoint:
  """A `save_pretrained` directory opened for reading: its config and lazy tensors."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    if not self.path.is_dir():
      raise errors.ConversionError(
          f"{self.path} is not a directory (expected a save_pretrained folder)")
    config_file = self.path / CONFIG_FILE
    if not config_file.is_file():
      raise errors.ConversionError(f"{self.path} has no {CONFIG_FILE}")
    self.config: dict[str, Any] = json.loads(config_file.read_text())
    self._file_of: dict[str, str] = {}
    self._handles = {}
    for file in self._weight_files():
      handle = safe_open(str(self.path / file), framework="np")
      self._handles[file] = handle
      for name in handle.keys():
        self._file_of[name] = file

  def _weight_files(self) -> list[str]:
    index = self.path / INDEX_FILE
    if index.is_file():
      weight_map = json.loads(index.read_text())["weight_map"]
      files = sorted(set(weight_map.values()))
      absent = [f for f in files if not (self.path / f).is_file()]
      if absent:
        raise errors.ConversionError(
            f"{index} names shard(s) that do not exist: {', '.join(absent)}")
      return files
    if (self.path / WEIGHTS_FILE).is_file():
      return [WEIGHTS_FILE]
    pickled = sorted({p.name for pattern in _PICKLE_PATTERNS for p in self.path.glob(pattern)})
    if pickled:
      raise errors.pickled_only(self.path, pickled)
    raise errors.ConversionError(
        f"{self.path} has neither {WEIGHTS_FILE} nor {INDEX_FILE}; nothing to load")

  def names(self) -> list[str]:
    return list(self._file_of)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._handles[self._file_of[name]].get_slice(name).get_shape())

  def dtype(self, name: str) -> str:
    code = self._handles[self._file_of[name]].get_slice(name).get_dtype()
    return _SAFETENSORS_DTYPES.get(code, code)

  def get(self, name: str) -> np.ndarray:
    return self._handles[self._file_of[name]].get_tensor(name)

  def stored_dtype(self) -> str:
    """The floating dtype most tensors are stored in."""
    counts = Counter(self.dtype(n) for n in self._file_of)
    floats = [(c, d) for d, c in counts.items() if d in _SAFETENSORS_DTYPES.values()]
    if not floats:
      raise errors.ConversionError(f"{self.path}: no floating-point tensors found")
    return max(floats)[1]


def write(
    path: str | os.PathLike,
    config: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> pathlib.Path:
  """Writes config.json and the tensors (sharded past `max_shard_size`) as directory `path`.

  Everything is written to a temporary directory next to `path` first, then renamed. With
  `overwrite`, an existing directory is replaced, keeping its files that are not weights or
  config (tokenizer files, README).
  """
  path = pathlib.Path(path)
  if path.exists() and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
  try:
    _write_files(tmp, config, tensors, parse_size(max_shard_size))
    if path.exists():
      for old in path.iterdir():
        if not _REPLACED.match(old.name):
          copy = shutil.copytree if old.is_dir() else shutil.copy2
          copy(old, tmp / old.name)
      # Rename the old directory aside rather than deleting it first: until the new one is in
      # place, a complete checkpoint exists under one of the two names.
      aside = pathlib.Path(
          tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
      os.rename(path, aside / "old")
      os.rename(tmp, path)
      shutil.rmtree(aside)
    else:
      os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def _write_files(directory: pathlib.Path, config, tensors, max_bytes: int) -> None:
  shards: list[list[str]] = [[]]
  size = 0
  for name, array in tensors.items():
    # Greedy, in order, as transformers shards: a tensor larger than the limit gets its own shard.
    if shards[-1] and size + array.nbytes > max_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += array.nbytes
  if len(shards) == 1:
    files = {WEIGHTS_FILE: shards[0]}
  else:
    n = len(shards)
    files = {f"model-{k + 1:05d}-of-{n:05d}.safetensors": names for k, names in enumerate(shards)}
  for file, names in files.items():
    target = directory / file
    save_file({n: np.ascontiguousarray(tensors[n]) for n in names}, str(target), metadata=_METADATA)
    _fsync(target)
  if len(files) > 1:
    index = {
        "metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
        "weight_map": {n: file for file, names in files.items() for n in names},
    }
    _write_json(directory / INDEX_FILE, index)
  _write_json(directory / CONFIG_FILE, dict(config))


def _write_json(target: pathlib.Path, value) -> None:
  target.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
  _fsync(target)


def _fsync(target: pathlib.Path) -> None:
  fd = os.open(target, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
