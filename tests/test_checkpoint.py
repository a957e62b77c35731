"""Checkpointer: round trip, pruning, the manifest, and a damaged file of every kind."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import checkpoint, pretrained
from research.checkpoint import __main__ as cli
from research.checkpoint import manifest
from research.config.optim import OptimizerConfig
from research.models import registry
from research.train import optimizer as opt_lib
from research.train.state import TrainState
from support import tiny


def _state(seed=0):
  cfg = tiny()
  tx, _ = opt_lib.build(OptimizerConfig(), 100)
  params = registry.init_params(cfg, jax.random.key(seed))
  state = TrainState.create(params, tx, jax.random.key(1))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = tx.update(grads, state.opt_state, params)  # non-trivial moments
  return state.replace(step=jnp.asarray(7, jnp.int32), opt_state=opt_state), tx


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def _saver(path, keep=5, keep_best=False, async_save=False):
  return checkpoint.Checkpointer(path, every=1, keep=keep, keep_best=keep_best, async_save=async_save)


def test_round_trip_restores_everything(tmp_path):
  state, tx = _state()
  ckpt = _saver(tmp_path, async_save=True)
  ckpt.save(7, state, {"data": {"position": 7}}, config={"name": "x"})
  ckpt.wait()
  assert manifest.check(tmp_path / "checkpoints" / "7") is None
  restored, meta = ckpt.restore_latest(_abstract(state))
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  assert meta["data"] == {"position": 7}
  # The restored optimizer state is usable as is.
  tx.update(jax.tree.map(jnp.ones_like, state.params), restored.opt_state, restored.params)
  ckpt.close()


def test_keeps_last_k_plus_the_best_eval(tmp_path):
  state, _ = _state()
  ckpt = _saver(tmp_path, keep=2, keep_best=True, async_save=True)
  for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, 2.5), (6, None)]:
    ckpt.save(step, state, {}, eval_loss=loss)
  ckpt.wait()
  assert ckpt.steps() == [2, 5, 6]
  assert not (tmp_path / "checkpoints.deleting").exists() or not any((tmp_path / "checkpoints.deleting").iterdir())
  ckpt.close()


def test_pruning_counts_only_valid_steps(tmp_path):
  """A damaged step never displaces a good one from the kept `keep`."""
  state, _ = _state()
  ckpt = _saver(tmp_path, keep=2)
  ckpt.save(1, state, {})
  ckpt.save(2, state, {})
  flip(tmp_path / "checkpoints" / "2" / "meta" / "metadata")  # damaged after sealing, same size
  ckpt.save(3, state, {})
  # Valid: 1 and 3, both kept; the damaged 2 is left for restore to quarantine, not counted.
  assert ckpt.steps() == [1, 2, 3]
  ckpt.save(4, state, {})
  assert ckpt.steps() == [2, 3, 4]
  ckpt.close()


def test_no_checkpoint_gives_none(tmp_path):
  state, _ = _state()
  ckpt = _saver(tmp_path, keep=1)
  assert ckpt.restore_latest(_abstract(state)) is None
  ckpt.close()


# ---------------------------------------------------------------- a damaged file of each kind


def _largest(pattern):
  return lambda step_dir: max(step_dir.glob(pattern), key=lambda p: p.stat().st_size)


KINDS = {
    "parameters": _largest("params/ocdbt.process_*/d/*"),
    "optimizer state": _largest("train/ocdbt.process_*/d/*"),
    "array metadata": lambda d: d / "params" / "_METADATA",
    "step metadata": lambda d: d / "_CHECKPOINT_METADATA",
    "data iterator state": lambda d: d / "meta" / "metadata",
    "config copy": lambda d: d / "config" / "metadata",
    "manifest": lambda d: d / manifest.MANIFEST,
}


def flip(path: pathlib.Path):
  data = bytearray(path.read_bytes())
  start = len(data) // 2 - min(len(data) // 2, 500)
  for i in range(start, min(start + 1000, len(data))):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


FAULTS = {
    "flipped bytes": flip,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "deleted": lambda p: p.unlink(),
    "zero-length": lambda p: p.write_bytes(b""),
}


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
  """A run directory with two sealed steps: 1 (good) and 2 (to be damaged)."""
  root = tmp_path_factory.mktemp("two_steps")
  good, _ = _state(seed=0)
  newer, _ = _state(seed=1)
  ckpt = _saver(root)
  ckpt.save(1, good, {"data": {"position": 1}}, config={"step": 1})
  ckpt.save(2, newer, {"data": {"position": 2}}, config={"step": 2})
  ckpt.close()
  return root, good


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_newest_step_is_quarantined_and_the_previous_restored(two_steps, tmp_path, caplog, kind, fault):
  source, good = two_steps
  run = tmp_path / "run"
  shutil.copytree(source, run)
  damaged = KINDS[kind](run / "checkpoints" / "2")
  FAULTS[fault](damaged)
  ckpt = _saver(run)
  with caplog.at_level("WARNING"):
    restored, meta = ckpt.restore_latest(_abstract(good))
  assert meta["data"] == {"position": 1}
  jax.tree.map(np.testing.assert_array_equal, restored, good)
  warning = next(r.message for r in caplog.records if "step 2 is invalid" in r.message)
  assert str(damaged.relative_to(run / "checkpoints")) in warning
  # Quarantined with its reason, not deleted; the good step is kept.
  assert ckpt.steps() == [1]
  assert str(damaged.name) in (run / checkpoint.INVALID_DIR / "2" / "INVALID.txt").read_text()
  # The next save of step 2 writes afresh.
  ckpt.save(2, good, {"data": {"position": 2}})
  assert ckpt.steps() == [1, 2]
  ckpt.close()


def test_nonfinite_values_make_a_step_invalid(tmp_path, caplog):
  good, _ = _state(seed=0)
  nan = good.replace(params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), good.params))
  ckpt = _saver(tmp_path)
  ckpt.save(1, good, {"data": {"position": 1}})
  ckpt.save(2, nan, {"data": {"position": 2}})  # sealed: the checksums match, the values do not
  with caplog.at_level("WARNING"):
    _, meta = ckpt.restore_latest(_abstract(good))
  assert meta["data"] == {"position": 1}
  assert any("NaN or infinite" in r.message and "step 2" in r.message for r in caplog.records)
  ckpt.close()


def test_every_step_invalid_stops_with_a_clear_message(two_steps, tmp_path):
  source, good = two_steps
  run = tmp_path / "run"
  shutil.copytree(source, run)
  for step in ("1", "2"):
    flip(KINDS["parameters"](run / "checkpoints" / step))
  ckpt = _saver(run)
  with pytest.raises(checkpoint.NoValidCheckpoint, match="no checkpoint .* is valid.*Nothing was deleted"):
    ckpt.restore_latest(_abstract(good))
  assert sorted(p.name for p in (run / checkpoint.INVALID_DIR).iterdir()) == ["1", "2"]
  ckpt.close()


def test_verify_lists_every_step(two_steps, tmp_path, capsys):
  source, _ = two_steps
  run = tmp_path / "run"
  shutil.copytree(source, run)
  assert cli.main(["verify", str(run)]) == 0
  FAULTS["truncated"](KINDS["optimizer state"](run / "checkpoints" / "2"))
  assert cli.main(["verify", str(run), "--no-values"]) == 1
  out = capsys.readouterr().out
  assert "step        1: valid" in out
  assert "step        2: INVALID: " in out and "truncated" in out
  assert checkpoint.verify_run(run)[1][1] is not None
  # The analysis path skips the damaged step; asking for it by name says why.
  _, good = two_steps
  params = checkpoint.restore_params(run, _abstract(good.params))
  jax.tree.map(np.testing.assert_array_equal, params, good.params)


# ------------------------------------------------------------------------ one writer per run


def test_lock_refuses_a_second_writer_and_takes_over_a_dead_ones(tmp_path, caplog):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from research.checkpoint.lock import RunLock\n"
       f"RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(600)"],
      stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).resolve().parent.parent)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(checkpoint.RunDirectoryBusy, match=f"in use by process {holder.pid} on .*Wait for it"):
      checkpoint.RunLock(tmp_path).acquire()
  finally:
    holder.kill()
    holder.wait()
  with caplog.at_level("WARNING"):
    with checkpoint.RunLock(tmp_path):
      record = json.loads((tmp_path / ".lock").read_text())
      assert record["pid"] == os.getpid()
  assert any(f"process {holder.pid}" in r.message and "no longer running" in r.message
             for r in caplog.records)
  assert (tmp_path / ".lock").read_text() == ""  # released cleanly


# ------------------------------------------------------- checkpoints written before manifests

LEGACY_RUN = pathlib.Path(__file__).parent / "fixtures" / "legacy_run"


def test_a_checkpoint_from_before_manifests_restores_and_resumes(tmp_path, caplog):
  """tests/fixtures/legacy_run: `research.train --config smoke` (d_model 16, one layer, two
  steps) written by commit 515a9af, before manifests, with its logits on a fixed input."""
  from research.train import __main__ as train_cli
  from research.train import loop

  run = tmp_path / "run"
  shutil.copytree(LEGACY_RUN, run)
  config, model, params = pretrained.restore(run)
  ids = (np.arange(24, dtype=np.int32) % config.model.vocab_size).reshape(2, 12)
  # Recorded by that commit in its own process (XLA's default CPU flags, not the tests').
  np.testing.assert_allclose(model.apply({"params": params}, input_ids=ids),
                             np.load(run / "expected_logits.npy"), rtol=1e-5, atol=1e-6)
  assert checkpoint.verify_run(run) == [(2, None)]
  with caplog.at_level("WARNING"):
    summary = loop.train(train_cli.parse(["--config", str(run / "config.json"), "--workdir", str(run),
                                          "train.steps=3"])[0], run)
  assert summary["step"] == 3
  assert any("before checkpoints carried manifests" in r.message for r in caplog.records)
  assert manifest.check(run / "checkpoints" / "3") is None and not manifest.legacy(run / "checkpoints" / "3")
