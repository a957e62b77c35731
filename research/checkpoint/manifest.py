"""A checkpoint's manifest: every file of a step with its size and sha256, written last.

A step directory is *sealed* once orbax has finished and renamed it: `manifest.json` lists each
file under it (parameters, optimiser state, data-iterator state, the config copy, orbax's own
metadata) and is written to a temporary name, flushed and renamed, so it is either absent or
whole. `check` re-reads every listed file; a missing, truncated, grown or altered file, or a
missing or unreadable manifest, makes the step invalid, with a reason naming the file.

This is the role of the `commit_success` marker plus checksums in t5x, and of orbax's own
`commit_success.txt` on object stores, made content-verifying: a marker says the save ended, a
checksum also catches what happened to the bytes afterwards (bit rot, a partial copy, a tool
that wrote into the wrong directory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 22


def sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_atomically(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` through a flushed temporary file and a rename."""
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  dir_fd = os.open(path.parent, os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def seal(step_dir: pathlib.Path, step: int, metrics: dict[str, float] | None = None) -> dict:
  """Writes `step_dir/manifest.json` over the files now in `step_dir`; returns the manifest."""
  files = {str(p.relative_to(step_dir)): {"size": p.stat().st_size, "sha256": sha256(p)}
           for p in _files(step_dir)}
  manifest = {"format": FORMAT, "step": step, "metrics": metrics or {}, "files": files}
  write_atomically(step_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
  return manifest


def read(step_dir: pathlib.Path) -> dict[str, Any] | None:
  """The manifest of `step_dir`, or None if it is missing or unreadable."""
  try:
    manifest = json.loads((step_dir / MANIFEST).read_text())
  except (OSError, ValueError):
    return None
  return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


LEGACY = {"format": 0, "files": {}, "metrics": {}}


def legacy(step_dir: pathlib.Path) -> bool:
  """Whether the step was written before checkpoints carried manifests (and a config copy):
  such a step cannot be verified, and is restored as it was then, with a warning."""
  return (not (step_dir / MANIFEST).exists() and not (step_dir / "config").exists()
          and (step_dir / "params").is_dir())


def read_or_legacy(step_dir: pathlib.Path) -> dict[str, Any] | None:
  return LEGACY if legacy(step_dir) else read(step_dir)


def check(step_dir: pathlib.Path) -> str | None:
  """None if every file the manifest lists is there with its size and sha256 (or the step
  predates manifests, see `legacy`); else why not."""
  path = step_dir / MANIFEST
  if legacy(step_dir):
    log.warning("%s was written before checkpoints carried manifests: its files cannot be "
                "verified (only that it restores and is finite)", step_dir)
    return None
  if not path.is_file():
    return (f"{path} is missing: the save did not finish (killed or failed after orbax's "
            "rename, before the step was sealed)")
  manifest = read(step_dir)
  if manifest is None:
    return f"{path} is unreadable (not the JSON manifest this library writes)"
  if manifest.get("format") != FORMAT:
    return f"{path} has format {manifest.get('format')!r}; this library reads format {FORMAT}"
  for name, entry in sorted(manifest["files"].items()):
    file = step_dir / name
    if not file.is_file():
      return f"{file} is missing"
    size = file.stat().st_size
    if size != entry["size"]:
      return f"{file} has {size} bytes; the manifest says {entry['size']} (truncated or overwritten)"
    if sha256(file) != entry["sha256"]:
      return f"{file} does not match its sha256 in the manifest (corrupted)"
  return None
