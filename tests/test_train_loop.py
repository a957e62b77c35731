"""The training loop end to end: run directory contents, resume, errors.

Killing a run with SIGKILL and resuming it is tested at exact points of the run (mid-training
before a save, and at every stage of an asynchronous save) in test_checkpoint_faults.py."""

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


def _preset_smoke(preset, workdir="x"):
  return cli.parse(["--config", f"{preset}-smoke", "--workdir", str(workdir), *QUIET,
                    "train.steps=2", "train.log_every=1", "train.eval_every=2", "train.eval_batches=1",
                    "train.checkpoint_every=0", "train.tensorboard=false"])[0]


def _presets_by_smoke_experiment() -> list[list[str]]:
  """The presets grouped by their smoke experiment, name aside: the smoke variants of
  gpt2/gpt2-medium/gpt2-large/gpt2-xl (and of llama2-7b/llama2-13b, ...) are one config, so
  they train one program; each group trains once."""
  groups: dict = {}
  for preset in presets.names(include_smoke=False):
    groups.setdefault(_preset_smoke(preset).replace(name=""), []).append(preset)
  return list(groups.values())


@pytest.mark.parametrize("group", _presets_by_smoke_experiment(), ids="+".join)
def test_every_preset_smoke_variant_trains_two_steps(tmp_path, group):
  config = _preset_smoke(group[0], tmp_path)
  for preset in group:
    smoke_model = presets.get(f"{preset}-smoke")  # encoder experiments add their objective's heads
    assert config.model.replace(encoder_heads=smoke_model.encoder_heads) == smoke_model
    assert _preset_smoke(preset, tmp_path).replace(name=config.name) == config
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
