import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import checkpoint
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


def test_round_trip_restores_everything(tmp_path):
  state, tx = _state()
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=2, keep_best=False)
  ckpt.save(7, state, {"data": {"position": 7}})
  ckpt.wait()
  restored, meta = ckpt.restore_latest(_abstract(state))
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  assert meta["data"] == {"position": 7}
  # The restored optimizer state is usable as is.
  tx.update(jax.tree.map(jnp.ones_like, state.params), restored.opt_state, restored.params)
  ckpt.close()


def test_keeps_last_k_plus_the_best_eval(tmp_path):
  state, _ = _state()
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=2, keep_best=True)
  for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, 2.5), (6, None)]:
    ckpt.save(step, state, {}, eval_loss=loss)
  ckpt.wait()
  assert ckpt.steps() == [2, 5, 6]
  ckpt.close()


def test_corrupted_latest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
  good, _ = _state(seed=0)
  newer, _ = _state(seed=1)
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=3, keep_best=False, async_save=False)
  ckpt.save(1, good, {"data": {"position": 1}})
  ckpt.save(2, newer, {"data": {"position": 2}})
  ckpt.wait()
  # Truncate the data files of the newest checkpoint's parameters.
  data_files = list((tmp_path / "checkpoints" / "2" / "params").glob("ocdbt.process_*/d/*"))
  assert data_files
  for f in data_files:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  with caplog.at_level("WARNING"):
    restored, meta = ckpt.restore_latest(_abstract(good))
  assert meta["data"] == {"position": 1}
  jax.tree.map(np.testing.assert_array_equal, restored.params, good.params)
  assert any("step 2 failed to restore" in r.message for r in caplog.records)
  ckpt.close()


def test_no_checkpoint_gives_none(tmp_path):
  state, _ = _state()
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=1, keep_best=False)
  assert ckpt.restore_latest(_abstract(state)) is None
  ckpt.close()
