"""Elastic restart: a run resumed on another mesh, device count, host count or gradient
accumulation continues the same run: its losses equal an uninterrupted single-device run's."""

import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from research.train import __main__ as cli
from research.train import loop
from research.train.metrics_log import read_metrics

# The schedule decays over a fixed 8 steps, so a run stopped early by a smaller train.steps
# follows the uninterrupted run's learning rates.
ARGS = ["--config", "smoke", "optimizer.decay_steps=8", "train.progress=false",
        "train.sample_tokens=0", "train.log_every=1", "train.eval_every=0",
        "train.keep_checkpoints=10", "train.tensorboard=false"]


def _train(run_dir, *overrides):
  config, _ = cli.parse([*ARGS, *overrides, "--workdir", str(run_dir)])
  return loop.train(config, run_dir)


def _losses(run_dir) -> list[float]:
  return [r["loss"] for r in sorted(read_metrics(run_dir), key=lambda r: r["step"]) if "loss" in r]


def _env(devices: int) -> dict[str, str]:
  """The test process's environment for a subprocess with `devices` CPU devices; it shares
  the compilation cache."""
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  return env


def _command(run_dir, *overrides):
  return [sys.executable, "-m", "research.train", *ARGS, *overrides, "--workdir", str(run_dir)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted single-device run's 8 losses."""
  run = tmp_path_factory.mktemp("reference") / "run"
  _train(run, "mesh.data=1", "train.steps=8", "train.checkpoint_every=0")
  return _losses(run)


def test_resume_on_other_meshes_and_device_counts_continues_the_run(tmp_path, capsys, reference):

  run = tmp_path / "run"
  _train(run, "mesh.data=1", "mesh.fsdp=8", "train.steps=2", "train.checkpoint_every=2")
  # Tensor parallel with gradient accumulation (the global batch is unchanged).
  _train(run, "mesh.data=2", "mesh.tensor=4", "train.grad_accum=2", "train.steps=4",
         "train.checkpoint_every=2")
  out = capsys.readouterr().out
  assert ("resuming from the checkpoint of step 2; changed since it was saved (saved -> now): "
          "mesh.data: 1 -> 2, mesh.fsdp: 8 -> 1, mesh.tensor: 1 -> 4, train.grad_accum: 1 -> 2, "
          "train.steps: 2 -> 4") in out
  # A machine with 4 devices instead of 8, ZeRO-1 over them.
  done = subprocess.run(_command(run, "mesh.data=-1", "mesh.zero_stage=1", "train.steps=6",
                                 "train.checkpoint_every=2"),
                        env=_env(4), capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "4 device(s) in 1 process(es)" in done.stdout
  # Back on 8 devices, pipelined over two stages.
  _train(run, "mesh.data=4", "mesh.stage=2", "train.steps=8", "train.checkpoint_every=2")

  np.testing.assert_allclose(_losses(run), reference, rtol=2e-5)


def test_a_refused_change_names_every_differing_field(tmp_path):
  run = tmp_path / "run"
  _train(run, "mesh.data=1", "train.steps=2", "train.checkpoint_every=2")
  with pytest.raises(ValueError) as err:
    _train(run, "mesh.data=2", "train.steps=4", "data.batch_size=16", "optimizer.lr=0.1",
           "train.seed=3", "model.d_model=32")
  fields = re.findall(r"^  (\S+): ", str(err.value), re.M)
  assert fields == ["data.batch_size", "model.d_model", "optimizer.lr", "train.seed"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_one_process_resumed_as_two_and_two_as_one(tmp_path, reference):
  """8 devices in one process -> 4 + 4 in two gloo processes -> 8 in one again."""

  run = tmp_path / "run"
  _train(run, "train.steps=3", "train.checkpoint_every=3")
  port = _free_port()
  procs = [subprocess.Popen(
      _command(run, "train.steps=6", "train.checkpoint_every=3") + [
          "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
      env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "8 device(s) in 2 process(es)" in outputs[0]
  assert "resuming from the checkpoint of step 3" in outputs[0]
  _train(run, "train.steps=8", "train.checkpoint_every=3")

  np.testing.assert_allclose(_losses(run), reference, rtol=2e-5)
