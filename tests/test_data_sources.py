"""research.data.sources: lookup order, sha256 verification, offline errors (no network)."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request

import pytest

from research.data import sources

CONTENT = b"To be, or not to be: that is the question.\n"
SOURCE = sources.RemoteText(
    name="hamlet", url="https://example.invalid/hamlet.txt",
    sha256=hashlib.sha256(CONTENT).hexdigest(), filename="hamlet.txt")


@pytest.fixture
def no_data_dir(monkeypatch):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)


def serve(monkeypatch, body: bytes | None):
  """Replaces urlopen: returns `body`, or fails like an offline machine when None."""
  calls = []

  def urlopen(url, timeout=None):
    calls.append(url)
    if body is None:
      raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    return io.BytesIO(body)

  monkeypatch.setattr(urllib.request, "urlopen", urlopen)
  return calls


def test_download_is_verified_cached_and_reused(tmp_path, monkeypatch, no_data_dir):
  calls = serve(monkeypatch, CONTENT)
  path = sources.locate(SOURCE, tmp_path)
  assert path == tmp_path / "datasets" / "hamlet.txt" and path.read_bytes() == CONTENT
  assert sources.locate(SOURCE, tmp_path) == path
  assert calls == [SOURCE.url]  # the second lookup found the cached copy
  assert [p.name for p in path.parent.iterdir()] == ["hamlet.txt"]


def test_data_dir_comes_first(tmp_path, monkeypatch):
  calls = serve(monkeypatch, None)
  (tmp_path / "shared").mkdir()
  (tmp_path / "shared" / "hamlet.txt").write_bytes(CONTENT)
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "shared"))
  assert sources.locate(SOURCE, tmp_path / "cache") == tmp_path / "shared" / "hamlet.txt"
  assert calls == []


def test_sha256_mismatch_names_both_hashes_and_keeps_nothing(tmp_path, monkeypatch,
                                                              no_data_dir):
  serve(monkeypatch, b"tampered")
  bad = hashlib.sha256(b"tampered").hexdigest()
  with pytest.raises(ValueError, match=f"sha256 {bad}, expected {SOURCE.sha256}"):
    sources.locate(SOURCE, tmp_path)
  assert not any((tmp_path / "datasets").iterdir())
  # A local copy that does not match is refused the same way, and left alone.
  (tmp_path / "shared").mkdir()
  (tmp_path / "shared" / "hamlet.txt").write_bytes(b"tampered")
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "shared"))
  with pytest.raises(ValueError, match=f"sha256 {bad}, expected {SOURCE.sha256}"):
    sources.locate(SOURCE, tmp_path)
  assert (tmp_path / "shared" / "hamlet.txt").exists()


def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch, no_data_dir):
  serve(monkeypatch, None)
  with pytest.raises(FileNotFoundError) as info:
    sources.locate(SOURCE, tmp_path)
  message = str(info.value)
  assert str(tmp_path / "datasets" / "hamlet.txt") in message
  assert sources.DATA_DIR_ENV in message and SOURCE.url in message
  assert "name resolution" in message and SOURCE.sha256 in message
  assert not any((tmp_path / "datasets").iterdir())


def test_tinyshakespeare_is_registered_with_its_canonical_url_and_hash():
  source = sources.SOURCES["tinyshakespeare"]
  assert source.url == ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                        "tinyshakespeare/input.txt")
  assert source.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
  data_dir = os.environ.get(sources.DATA_DIR_ENV)
  if data_dir and os.path.isfile(os.path.join(data_dir, source.filename)):
    assert sources.file_sha256(os.path.join(data_dir, source.filename)) == source.sha256
