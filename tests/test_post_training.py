"""Post-training through `python -m research.train`: fine-tuning from a run (train.init_from),
a PEFT run that checkpoints only its adapter, and distillation from a teacher run."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from research import checkpoint, peft, pretrained
from research.train import __main__ as cli
from research.train import evaluate, loop
from research.train.metrics_log import read_metrics

QUIET = ["train.progress=false", "train.sample_tokens=0", "mesh.data=1", "train.tensorboard=false",
         "train.eval_batches=1", "data.dataset=copy"]


def _train(workdir, *overrides, config="smoke"):
  cfg = cli.parse(["--config", str(config), "--workdir", str(workdir), *QUIET, *overrides])[0]
  return loop.train(cfg, workdir)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  run = tmp_path_factory.mktemp("post") / "base"
  _train(run, "train.steps=3", "train.checkpoint_every=3", "train.eval_every=0")
  return run


def _leaves(tree):
  return {"/".join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_fine_tuning_starts_from_the_run(base_run, tmp_path):
  run = tmp_path / "sft"
  _train(run, "train.steps=1", "train.objective=sft", "data.loss_on=answer", f"train.init_from={base_run}",
         "optimizer.lr=1e-9", "optimizer.warmup_steps=0", config=base_run / "config.json")
  _, _, start = pretrained.restore(base_run)
  _, _, tuned = pretrained.restore(run)
  # One step at a negligible learning rate: the run began at the base's parameters.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), tuned, start)
  assert json.loads((run / "base.json").read_text()) == {"path": str(base_run), "kind": "run", "step": 3}
  assert any("eval_exact_match" in r for r in read_metrics(run))
  with pytest.raises(ValueError, match=r"another architecture.*\n  model.d_model: 32 here, 64"):
    _train(tmp_path / "wide", "train.steps=1", f"train.init_from={base_run}", "model.d_model=32")
  with pytest.raises(ValueError, match="trained with another tokenizer.*data.tokenizer.kind=file"):
    _train(tmp_path / "tok", "train.steps=1", f"train.init_from={base_run}", "data.dataset=modular_arithmetic")


def test_peft_run_checkpoints_only_the_adapter(base_run, tmp_path):
  run = tmp_path / "lora"
  _train(run, "train.steps=2", "train.checkpoint_every=2", "train.objective=sft", "data.loss_on=answer",
         f"train.init_from={base_run}", "peft.method=lora", "peft.targets=q,v",
         "optimizer.lr=1e-2", config=base_run / "config.json")
  _, _, base = pretrained.restore(base_run)
  config, model, params = pretrained.restore(run)
  assert isinstance(model, peft.PeftModel) and config.peft.method == "lora"
  base_leaves, full = _leaves(base), _leaves(params)
  adapter = {k: v for k, v in full.items() if k not in base_leaves}
  assert adapter and all(k.endswith(("lora_a", "lora_b")) for k in adapter)
  for k, v in base_leaves.items():  # the base is bit-identical after training
    np.testing.assert_array_equal(full[k], v)
  # The checkpoint holds the adapter alone; the adapter directory reloads to the same model.
  stored = checkpoint.restore_params(run, _abstract(adapter))
  assert set(_leaves(stored)) == set(adapter)
  ids = np.ones((1, 6), np.int32)
  reloaded_model, reloaded = pretrained.restore_adapter(run / "adapter")

  def logits(model, params):
    return jax.jit(lambda p: model.apply({"params": p}, input_ids=ids))(params)

  np.testing.assert_allclose(logits(reloaded_model, reloaded), logits(model, params), atol=1e-6)
  scores = evaluate.evaluate_run(str(run))
  assert scores["responses"] > 0 and 0 <= scores["exact_match"] <= 1


def _abstract(flat):
  """ShapeDtypeStructs of a '/'-keyed flat dict, nested."""
  out = {}
  for key, value in flat.items():
    node = out
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jax.ShapeDtypeStruct(value.shape, value.dtype)
  return out


@pytest.mark.parametrize("chunk", [0, 32])
def test_distillation_from_a_teacher_run(base_run, tmp_path, chunk):
  run = tmp_path / "student"
  _train(run, "train.steps=2", "train.log_every=1", "model.d_model=32", "model.n_heads=2",
         "train.objective=sft", "data.loss_on=answer", f"distill.teacher={base_run}",
         "distill.alpha=0.5", "distill.temperature=2", f"distill.chunk_tokens={chunk}")
  records = [r for r in read_metrics(run) if "loss" in r]
  assert len(records) == 2 and all(np.isfinite(r["kl"]) and r["kl"] > 0 for r in records)
  # The reported loss is the mix: 0.5 * 4 * KL + 0.5 * CE.
  r = records[0]
  assert r["loss"] == pytest.approx(0.5 * 4 * r["kl"] + 0.5 * r["ce"], rel=1e-4)


def test_a_hugging_face_directory_is_a_starting_point(tmp_path):
  import research.hf
  from research.models import registry
  from support import tiny

  cfg = tiny(vocab_size=64, d_model=32, d_ff=48)
  params = registry.init_params(cfg, jax.random.key(0))
  research.hf.save(registry.build(cfg), params, tmp_path / "hf")
  source = pretrained.load(tmp_path / "hf")
  assert source.reference == {"path": str(tmp_path / "hf"), "kind": "hf", "step": None}
  jax.tree.map(np.testing.assert_array_equal, source.params, params)
  pretrained.check_compatible(cfg.replace(remat="full", scan_layers=False), source, "train.init_from")
  with pytest.raises(ValueError, match="model.n_layers: 3 here, 2 in the checkpoint"):
    pretrained.check_compatible(cfg.replace(n_layers=3), source, "train.init_from")
  looped = pretrained.to_layout(source.params, source.model_cfg, cfg.replace(scan_layers=False))
  assert "layers_1" in looped["blocks"]
