"""Fault injection end to end: a run whose checkpoints were damaged, or that was killed or ran
out of disk while saving, resumes from its newest valid step and reproduces the uninterrupted
run's losses from there, or stops with a clear message; no valid checkpoint is lost.

The README's fault table (Training, "Faults tried") lists these cases; tests/test_checkpoint.py
covers every kind of file x every kind of damage at the Checkpointer level.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import pytest

from research import checkpoint
from research.checkpoint import manifest
from research.train import __main__ as cli
from research.train import loop
from research.train.metrics_log import read_metrics
from test_checkpoint import KINDS, flip

ARGS = ["--config", "smoke", "train.progress=false", "train.sample_tokens=0", "mesh.data=1",
        "train.steps=8", "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=2",
        "train.keep_checkpoints=10", "train.tensorboard=false"]
REPO = pathlib.Path(__file__).resolve().parent.parent


def _train(run_dir, *extra):
  config, _ = cli.parse([*ARGS, *extra, "--workdir", str(run_dir)])
  return loop.train(config, run_dir)


def _losses(run_dir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run: 8 steps, sealed checkpoints at 2, 4, 6 and 8."""
  run = tmp_path_factory.mktemp("reference") / "run"
  _train(run)
  assert checkpoint.saved_steps(run) == [2, 4, 6, 8]
  return run, _losses(run)


def _killed_copy(reference_run, tmp_path, last_step) -> pathlib.Path:
  """The reference run directory as a run killed after `last_step` + 1 would leave it."""
  run = tmp_path / "run"
  shutil.copytree(reference_run, run)
  for step in checkpoint.saved_steps(run):
    if step > last_step:
      shutil.rmtree(run / "checkpoints" / str(step))
  return run


def _assert_resumed(run, reference_losses, capsys, from_step):
  out = capsys.readouterr().out
  assert f"resuming from the checkpoint of step {from_step}" in out
  losses = _losses(run)
  assert sorted(losses) == list(range(1, 9))
  assert {s: losses[s] for s in range(from_step + 1, 9)} == {
      s: reference_losses[s] for s in range(from_step + 1, 9)}  # exact on CPU


@pytest.mark.parametrize("item, last_step, expected", [
    ("params", 4, 2),   # the case, with one older step left
    ("train", 6, 4),    # the optimiser state
])
def test_overwritten_bytes_in_the_newest_step(reference, tmp_path, capsys, caplog, item, last_step, expected):
  """Overwriting 1,000 bytes in the middle of a data file: detected, the step quarantined, the
  run resumed from the step before and equal to the uninterrupted run from there."""
  ref_run, ref_losses = reference
  run = _killed_copy(ref_run, tmp_path, last_step)
  data_file = max((run / "checkpoints" / str(last_step) / item).glob("ocdbt.process_*/d/*"),
                  key=lambda p: p.stat().st_size)
  blob = bytearray(data_file.read_bytes())
  blob[len(blob) // 2: len(blob) // 2 + 1000] = bytes(1000)
  data_file.write_bytes(bytes(blob))
  with caplog.at_level("WARNING"):
    _train(run)
  assert any(f"step {last_step} is invalid" in r.message and data_file.name in r.message
             for r in caplog.records)
  _assert_resumed(run, ref_losses, capsys, from_step=expected)
  assert (run / checkpoint.INVALID_DIR / str(last_step)).is_dir()
  assert [s for s, why in checkpoint.verify_run(run, values=False) if why is None] == [2, 4, 6, 8]


def test_unreadable_config_json_is_recovered_from_the_sealed_copy(reference, tmp_path, capsys, caplog):
  ref_run, ref_losses = reference
  run = _killed_copy(ref_run, tmp_path, 6)
  flip(run / checkpoint.CONFIG_FILE)
  with caplog.at_level("WARNING"):
    _train(run)
  assert any("config.json is unreadable" in r.message and "checkpoint 6" in r.message
             for r in caplog.records)
  _assert_resumed(run, ref_losses, capsys, from_step=6)
  assert checkpoint.read_config(run) == checkpoint.read_config(ref_run)


def test_no_valid_step_left_stops_with_a_clear_message(reference, tmp_path):
  ref_run, _ = reference
  run = _killed_copy(ref_run, tmp_path, 4)
  for step in (2, 4):
    flip(KINDS["data iterator state"](run / "checkpoints" / str(step)))
  with pytest.raises(checkpoint.NoValidCheckpoint, match="Nothing was deleted"):
    _train(run)
  assert sorted(p.name for p in (run / checkpoint.INVALID_DIR).iterdir()) == ["2", "4"]
  assert not (run / ".lock").read_text()  # the lock is released on the way out


@pytest.mark.parametrize("point, expected", [
    ("save_start", 4),     # nothing of step 6 written
    ("before_rename", 4),  # every file of step 6 in orbax's temporary directory
    ("after_rename", 4),   # step 6 in place, not sealed
    ("after_seal", 6),     # sealed, not yet pruned
])
def test_sigkill_during_an_asynchronous_save(reference, tmp_path, capsys, point, expected):
  ref_run, ref_losses = reference
  run = tmp_path / "run"
  # The in-process runs' compilation cache serves the subprocess too (same XLA flags).
  env = dict(os.environ, RESEARCH_FAILPOINTS=f"{point}@6",
             JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  proc = subprocess.run([sys.executable, "-m", "research.train", *ARGS, "--workdir", str(run)],
                        env=env, cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert checkpoint.saved_steps(run)[:2] == [2, 4]
  _train(run)
  _assert_resumed(run, ref_losses, capsys, from_step=expected)
  assert [s for s, why in checkpoint.verify_run(run, values=False) if why is None] == [2, 4, 6, 8]
  assert not list((run / "checkpoints").glob("*tmp*"))  # the killed save's leftovers are gone


@pytest.fixture
def small_disk(tmp_path):
  """A tmpfs of 4.5 MiB: room for two of the smoke run's checkpoints, not three."""
  mount = tmp_path / "disk"
  mount.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4608k", "tmpfs", str(mount)],
                        capture_output=True, text=True)
  if made.returncode != 0:
    pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {made.stderr.strip()}")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_a_save(reference, tmp_path, small_disk, capsys):
  ref_run, ref_losses = reference
  run = small_disk / "run"
  with pytest.raises(checkpoint.CheckpointWriteError, match="could not be written") as err:
    _train(run)
  failed_at = int(str(err.value).split("step ")[1].split()[0])
  assert failed_at > 2
  saved = checkpoint.saved_steps(run)
  assert saved == list(range(2, failed_at, 2))  # every earlier step intact ...
  assert all(why is None for _, why in checkpoint.verify_run(run, values=False))
  assert not list((run / "checkpoints").glob("*tmp*"))  # ... and the partial write removed
  # Space freed (here: the run moved to a larger disk), the same command resumes.
  moved = tmp_path / "moved"
  shutil.copytree(run, moved)
  capsys.readouterr()
  _train(moved)
  _assert_resumed(moved, ref_losses, capsys, from_step=saved[-1])
  assert (moved / "checkpoints" / "8" / manifest.MANIFEST).is_file()


def test_training_refuses_a_run_directory_in_use(tmp_path):
  with checkpoint.RunLock(tmp_path / "run"):
    with pytest.raises(checkpoint.RunDirectoryBusy, match=f"process {os.getpid()} on"):
      _train(tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything was written
