"""One writer per run directory.

`RunLock` holds an exclusive `flock` on `RUN_DIR/.lock` for as long as a run trains. A second
run on the same directory is refused with the holder's pid, host and command. The kernel
releases the lock when its process dies however it dies (SIGKILL, OOM, a lost node), so a
stale lock file left by a dead run is taken over with a note; no timeout or pid guessing is
involved. (flock is advisory and local: on network file systems that do not forward it, two
hosts can still open the same directory. Multi-host runs take it on the primary only.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pathlib
import socket
import sys
import time

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunDirectoryBusy(RuntimeError):
  """Another live process is training in this run directory."""


class RunLock:
  """Context manager: `with RunLock(run_dir): ...` trains with the directory to itself."""

  def __init__(self, run_dir: str | pathlib.Path):
    self.path = pathlib.Path(run_dir) / LOCK_FILE
    self._fd: int | None = None

  def acquire(self) -> None:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(_read(fd))
      os.close(fd)
      raise RunDirectoryBusy(
          f"{self.path.parent} is in use by {holder}; two runs writing one directory would "
          "interleave their checkpoints and metrics. Wait for it to finish, stop it, or use "
          "another --workdir.") from None
    previous = _read(fd)
    if previous:
      log.warning("taking over the lock of %s, which is no longer running", _describe(previous))
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)  # an empty lock file: the last run ended cleanly
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "RunLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read(fd: int) -> dict:
  try:
    text = os.pread(fd, 1 << 16, 0).decode()
    return json.loads(text) if text.strip() else {}
  except (OSError, ValueError):
    return {"pid": "?", "command": "an unreadable lock record"}


def _describe(record: dict) -> str:
  if not record:
    return "another process"
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["since"])) if "since" in record else "?"
  return (f"process {record.get('pid', '?')} on {record.get('host', '?')} (since {since}: "
          f"{record.get('command', '?')})")
