"""span_corruption and blank_infilling: chosen by the family, prepared on the host, trained end
to end by research.train."""

import dataclasses

import jax
import numpy as np
import pytest

from research.config import registry as configs
from research.config.experiment import ExperimentConfig
from research.config.model import ModelConfig
from research.config.train import DEFAULT_OBJECTIVE, TrainConfig
from research.models import registry
from research.train import __main__ as cli
from research.train import loop, objectives
from research.train.metrics_log import read_metrics


@pytest.mark.parametrize("name, objective", [
    ("t5-small-smoke", "span_corruption"), ("t5-v1_1-small-smoke", "span_corruption"),
    ("switch-base-8-smoke", "span_corruption"), ("glm-small-smoke", "blank_infilling"),
    ("chatglm-6b", "blank_infilling"), ("llama2-7b-smoke", "causal_lm"),
])
def test_presets_train_with_their_familys_objective(name, objective):
  assert configs.get(name).train.objective == objective


def test_objective_and_family_must_agree():
  t5 = ModelConfig(family="encoder_decoder", d_model=32, n_heads=4, n_layers=2)
  with pytest.raises(ValueError, match="train.objective='causal_lm' does not train model.family="
                                       "'encoder_decoder'; it trains: decoder, prefix_lm"):
    ExperimentConfig(model=t5)
  assert set(DEFAULT_OBJECTIVE) == {"decoder", "encoder", "encoder_decoder", "prefix_lm"}
  ExperimentConfig(model=t5, train=TrainConfig(objective="span_corruption"))
  # A prefix LM also trains as a plain causal LM (no prefix).
  ExperimentConfig(model=t5.replace(family="prefix_lm"))


def _prepared_loss(name, **model_inputs):
  """(config, prepared batch, objective loss, weight, the same loss recomputed from logits of
  the batch keys `model_inputs` names)."""
  cfg = configs.get(name)
  cfg = cfg.replace(data=dataclasses.replace(cfg.data, seq_len=32, batch_size=2))
  from research import data

  dataset = data.build(cfg.data)
  objective = objectives.get(cfg.train.objective)
  batch = objective.prepare(next(dataset.train_iterator()), tokenizer=dataset.tokenizer,
                            config=cfg, epoch=0)
  model = registry.build(cfg.model)
  params = registry.init_params(cfg.model, jax.random.key(0))

  @jax.jit
  def loss_and_logits(params, batch):
    loss, weight, _ = objective.loss(model, params, batch, None, deterministic=True)
    logits = model.apply({"params": params}, **{k: batch[v] for k, v in model_inputs.items()})
    return loss, weight, logits

  loss, weight, logits = loss_and_logits(params, batch)
  log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
  picked = np.take_along_axis(np.asarray(log_probs), batch["targets"][..., None], axis=-1)[..., 0]
  expected = -(picked * batch["loss_mask"]).sum()
  return cfg, batch, float(loss), float(weight), expected


def test_span_corruption_loss_reads_the_prepared_batch():
  cfg, batch, loss, weight, expected = _prepared_loss(
      "t5-small-smoke", input_ids="input_ids", attention_mask="attention_mask",
      decoder_input_ids="decoder_input_ids", decoder_attention_mask="decoder_attention_mask")
  assert weight == batch["loss_mask"].sum() > 0
  assert loss == pytest.approx(expected, rel=1e-5)
  # The sentinels sit at the top of the model's vocabulary, above the char tokenizer's ids.
  assert batch["input_ids"].max() == cfg.model.vocab_size - 1


def test_blank_infilling_loss_scores_part_b_only():
  _, batch, loss, weight, expected = _prepared_loss(
      "glm-small-smoke", input_ids="input_ids", attention_mask="attention_mask",
      position_ids="position_ids", block_position_ids="block_position_ids",
      prefix_len="prefix_len")
  assert weight == batch["loss_mask"].sum() > 0
  assert np.all(batch["loss_mask"].argmax(axis=1) == batch["prefix_len"])
  assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["switch-base-8-smoke", "glm-small-smoke"])
def test_research_train_runs_the_family(name, tmp_path):
  cfg = cli.parse(["--config", name, "--workdir", str(tmp_path), "train.progress=false",
                   "train.tensorboard=false", "mesh.data=1", "train.steps=8", "train.log_every=4",
                   "train.eval_every=8", "train.checkpoint_every=8"])[0]
  summary = loop.train(cfg, tmp_path)
  losses = [r["loss"] for r in read_metrics(tmp_path) if "loss" in r]
  assert summary["step"] == 8 and np.isfinite(summary["eval_loss"])
  assert losses[-1] < losses[0]
  assert not (tmp_path / "samples.txt").exists()  # these objectives do not sample text
