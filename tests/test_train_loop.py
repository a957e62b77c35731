"""The training loop end to end: run directory contents, resume, kill-and-resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from research import checkpoint, presets, pretrained
from research.train import __main__ as cli
from research.train import loop
from research.train.metrics_log import read_metrics

# One device and no sampling keep these tests to the loop itself (the 8-device runs are in
# test_sharding.py and test_multihost.py).
QUIET = ["train.progress=false", "train.sample_tokens=0", "mesh.data=1"]


def _config(workdir, *overrides):
  return cli.parse(["--config", "smoke", "--workdir", str(workdir), *QUIET, *overrides])[0]


def _train(workdir, *overrides):
  return loop.train(_config(workdir, *overrides), workdir)


def test_end_to_end_run_directory(tmp_path):
  summary = _train(tmp_path, "train.steps=6", "train.log_every=3", "train.eval_every=3",
                   "train.checkpoint_every=3", "train.sample_tokens=8")
  assert summary["step"] == 6 and np.isfinite(summary["eval_loss"])
  for name in ("config.json", "metrics.jsonl", "summary.json", "samples.txt", "tokenizer", "tensorboard"):
    assert (tmp_path / name).exists(), name
  records = read_metrics(tmp_path)
  train_records = [r for r in records if "loss" in r]
  assert [r["step"] for r in train_records] == [3, 6]
  assert {"loss", "ppl", "grad_norm", "lr", "tokens_per_s", "mfu", "skipped_total", "accuracy"} <= set(train_records[0])
  assert train_records[0]["ppl"] == pytest.approx(np.exp(train_records[0]["loss"]), rel=1e-6)
  assert [r["step"] for r in records if "eval_loss" in r] == [3, 6]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]

  config, model, params = pretrained.restore(tmp_path)
  assert config == _config(tmp_path, "train.steps=6", "train.log_every=3", "train.eval_every=3",
                           "train.checkpoint_every=3", "train.sample_tokens=8")
  ids = np.zeros((1, 8), np.int32)
  assert np.isfinite(jax.jit(lambda p: model.apply({"params": p}, input_ids=ids))(params)).all()
  _, _, params3 = pretrained.restore(tmp_path, step=3)
  assert not np.allclose(params3["embed"]["tokens"]["embedding"], params["embed"]["tokens"]["embedding"])

  # Re-running the same command resumes: there is nothing left to train.
  again = _train(tmp_path, "train.steps=6", "train.log_every=3", "train.eval_every=3",
                 "train.checkpoint_every=3", "train.sample_tokens=8")
  assert again["step"] == 6
  assert len([r for r in read_metrics(tmp_path) if "loss" in r]) == 2


@pytest.mark.parametrize("preset", presets.names(include_smoke=False))
def test_every_preset_smoke_variant_trains_two_steps(tmp_path, preset):
  config = cli.parse(["--config", f"{preset}-smoke", "--workdir", str(tmp_path), *QUIET,
                      "train.steps=2", "train.log_every=1", "train.eval_every=2", "train.eval_batches=1",
                      "train.checkpoint_every=0", "train.tensorboard=false"])[0]
  smoke_model = presets.get(f"{preset}-smoke")  # encoder experiments add their objective's heads
  assert config.model.replace(encoder_heads=smoke_model.encoder_heads) == smoke_model
  summary = loop.train(config, tmp_path)
  losses = [r["loss"] for r in read_metrics(tmp_path) if "loss" in r]
  assert summary["step"] == 2 and len(losses) == 2 and np.isfinite(losses).all()
  assert np.isfinite(summary["eval_loss"])
  assert checkpoint.Checkpointer(tmp_path, every=0, keep=1, keep_best=False).steps() == [2]


def test_resuming_with_a_different_config_names_the_fields(tmp_path):
  _train(tmp_path, "train.steps=2", "train.checkpoint_every=2")
  with pytest.raises(ValueError, match=r"model.d_model: 64 -> 32.*\n.*optimizer.lr"):
    _train(tmp_path, "train.steps=2", "model.d_model=32", "optimizer.lr=0.1")
  # Run-control fields may change: training further is allowed, and so is the remat policy
  # (the same function and parameters).
  assert _train(tmp_path, "train.steps=4", "train.checkpoint_every=2", "model.remat=full")["step"] == 4


def test_bad_overrides_are_rejected_with_close_matches(capsys):
  with pytest.raises(SystemExit):
    cli.parse(["--config", "smoke", "--workdir", "x", "model.n_layer=2"])
  err = capsys.readouterr().err
  assert "unknown config key 'model.n_layer'" in err and "model.n_layers" in err
  with pytest.raises(SystemExit):
    cli.parse(["--config", "smok", "--workdir", "x"])
  assert "did you mean smoke" in capsys.readouterr().err


def test_help_lists_configs_and_fields(capsys):
  with pytest.raises(SystemExit):
    cli.parse(["--help"])
  out = capsys.readouterr().out
  assert "default:" in out and "llama2-7b" in out
  assert "model.norm_placement (str) = 'pre'" in out and "optimizer.lr (float)" in out


def test_loss_falls_on_a_learnable_synthetic_task(tmp_path):
  # The copy task's format and alphabet are learnable within 120 steps: the validation loss
  # must fall by over half a nat from its value at step 10.
  _train(tmp_path, "data.dataset=copy", "train.steps=120", "train.log_every=10",
         "train.eval_every=10", "train.checkpoint_every=0", "optimizer.lr=3e-3")
  evals = [r["eval_loss"] for r in read_metrics(tmp_path) if "eval_loss" in r]
  assert evals[-1] < evals[0] - 0.5, evals


def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path):
  args = ["--config", "smoke", *QUIET, "train.steps=400", "train.log_every=10", "train.eval_every=0",
          "train.checkpoint_every=50", "train.tensorboard=false"]
  config, _ = cli.parse([*args, "--workdir", str(tmp_path / "reference")])
  loop.train(config, tmp_path / "reference")
  reference = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "reference") if "loss" in r]

  run = tmp_path / "killed"
  command = [sys.executable, "-m", "research.train", *args, "--workdir", str(run)]
  proc = subprocess.Popen(command, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if (run / "checkpoints" / "100").exists():
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  killed_at = max(r["step"] for r in read_metrics(run))
  assert killed_at < 400

  subprocess.run(command, env=os.environ, check=True, stdout=subprocess.DEVNULL)
  resumed = [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]
  assert resumed == reference  # exact on CPU: same batches, same RNG, same programs
