"""Registered text datasets: where their file is found, fetched and verified.

A `RemoteText` is one UTF-8 file with a canonical URL and its sha256. `locate` looks, in order:
1. `$RESEARCH_DATA_DIR/<filename>` (a shared data directory; CI sets it);
2. `<cache_dir>/datasets/<filename>` (an earlier download);
3. a download from the URL into the cache, kept only if its sha256 matches.
Every copy is checked against the sha256, and a mismatch is an error naming both hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import urllib.request

DATA_DIR_ENV = "RESEARCH_DATA_DIR"
_DOWNLOAD_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class RemoteText:
  name: str
  url: str
  sha256: str
  filename: str
  description: str = ""


SOURCES: dict[str, RemoteText] = {}


def register(source: RemoteText) -> RemoteText:
  if source.name in SOURCES and SOURCES[source.name] != source:
    raise ValueError(f"dataset {source.name!r} is already registered differently")
  SOURCES[source.name] = source
  return source


register(RemoteText(
    name="tinyshakespeare",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    filename="tinyshakespeare.txt",
    description="40,000 lines of Shakespeare (Karpathy's char-rnn), 1.1 MB, 65 characters",
))


def file_sha256(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _check(source: RemoteText, path: pathlib.Path) -> pathlib.Path:
  got = file_sha256(path)
  if got != source.sha256:
    raise ValueError(
        f"{path} does not match dataset {source.name!r}: sha256 {got}, expected "
        f"{source.sha256}. Replace it with the file from {source.url}"
    )
  return path


def locate(source: RemoteText, cache_dir: str | os.PathLike) -> pathlib.Path:
  """The verified local path of `source`'s file, downloading it into the cache if needed."""
  data_dir = os.environ.get(DATA_DIR_ENV)
  if data_dir:
    candidate = pathlib.Path(data_dir).expanduser() / source.filename
    if candidate.is_file():
      return _check(source, candidate)
  cached = pathlib.Path(cache_dir).expanduser() / "datasets" / source.filename
  if cached.is_file():
    return _check(source, cached)
  return download(source, cached)


def download(source: RemoteText, target: pathlib.Path) -> pathlib.Path:
  """Downloads `source` to `target` through a temporary file; keeps it only if verified."""
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
  h = hashlib.sha256()
  try:
    with open(tmp, "wb") as out:
      try:
        response = urllib.request.urlopen(source.url, timeout=_DOWNLOAD_TIMEOUT_S)
      except OSError as e:  # urllib.error.URLError included
        raise FileNotFoundError(_offline_message(source, target, e)) from e
      with response:
        for block in iter(lambda: response.read(1 << 20), b""):
          h.update(block)
          out.write(block)
    got = h.hexdigest()
    if got != source.sha256:
      raise ValueError(
          f"download of dataset {source.name!r} from {source.url} has sha256 {got}, "
          f"expected {source.sha256}; the file was not kept"
      )
    os.replace(tmp, target)
  finally:
    tmp.unlink(missing_ok=True)
  return target


def _offline_message(source: RemoteText, target: pathlib.Path, error: Exception) -> str:
  data_dir = os.environ.get(DATA_DIR_ENV)
  return (
      f"dataset {source.name!r} is not available locally and could not be downloaded "
      f"from {source.url} ({error}). Offline, put the file at {target}, or put "
      f"{source.filename} in a directory and set {DATA_DIR_ENV} to it"
      + (f" (now {DATA_DIR_ENV}={data_dir}, which has no {source.filename})"
         if data_dir else "")
      + f". Expected sha256: {source.sha256}"
  )
