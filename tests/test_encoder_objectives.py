"""Encoder objectives through the real train step: every head learns a small synthetic task,
the config refuses mismatched objectives, and each encoder preset trains from the CLI config."""

import jax
import numpy as np
import pytest

from research.config import ModelConfig
from research.config.data import DataConfig
from research.config.experiment import ExperimentConfig
from research.config.optim import OptimizerConfig
from research.config.train import TrainConfig
from research.models import registry
from research.tokenizers.char import CharTokenizer
from research.train import objectives, optimizer as opt_lib
from research.train.state import TrainState
from research.train.step import make_train_step

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER = CharTokenizer("0123456789abcdefghijklmnopqrstuvwxy", SPECIALS,
                          {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                           "mask": "[MASK]"})
PAD, CLS, SEP = 0, 2, 3
FIRST, VOCAB = 5, 40  # ordinary tokens are 5..39
T = 16
# _fit runs one small program hundreds of times: XLA's optimising backend costs a few seconds
# more to compile than the test session's level 0 (conftest) and runs each step ~4x faster.
OPTIMISED = {"xla_backend_optimization_level": 1}

MODEL = dict(family="encoder", vocab_size=VOCAB, d_model=48, n_layers=2, n_heads=4, d_ff=96,
             max_seq_len=T, norm="layernorm", norm_bias=True, norm_eps=1e-12,
             norm_placement="post", embed_norm=True, activation="gelu", position="learned",
             qkv_bias=True, out_bias=True, mlp_bias=True, type_vocab_size=2, pooler=True)


def _fit(cfg, objective, make, steps=600, lr=2e-3, batch=32, prepare=None):
  """Trains on fresh batches from make(rng, rows); returns the mean metrics of the last 20
  steps, each measured on a batch the model had not seen (before its update).

  Post-LN BERT from scratch wants its warmup (Xiong et al. 2020): a sixth of the steps.
  """
  model = registry.build(cfg)
  tx, schedule = opt_lib.build(OptimizerConfig(lr=lr, warmup_steps=steps // 6, weight_decay=0.01),
                               steps)
  state = TrainState.create(registry.init_params(cfg, jax.random.key(0)), tx, jax.random.key(1))
  step = jax.jit(make_train_step(model, objectives.get(objective).loss, tx, schedule, TrainConfig()),
                 compiler_options=OPTIMISED)
  rng = np.random.default_rng(0)
  prepare = prepare or (lambda b, epoch: b)
  history = []
  for i in range(steps):
    state, metrics = step(state, prepare(make(rng, batch), i))
    history.append(metrics)
  last = jax.device_get(history[-20:])
  return {k: float(np.mean([m[k] for m in last])) for k in last[0]}


def _filler(rng, rows, lo=10, hi=VOCAB):
  return rng.integers(lo, hi, (rows, T)).astype(np.int32)


def _classification(rng, rows):
  """Which of the markers 5, 6, 7 appears in the sequence (once, anywhere after [CLS])."""
  ids = _filler(rng, rows)
  labels = rng.integers(0, 3, rows)
  ids[np.arange(rows), rng.integers(1, T, rows)] = FIRST + labels
  ids[:, 0] = CLS
  return {"input_ids": ids, "segment_ids": np.ones_like(ids), "labels": labels.astype(np.int32)}


def _ner(rng, rows):
  """BIO tags of entity spans (tokens 30..39, one to three long) among words 10..29."""
  ids = _filler(rng, rows, 10, 30)
  tags = np.zeros((rows, T), np.int32)
  for r in range(rows):
    t = 1
    while t < T:
      length = int(rng.integers(1, 4))
      if rng.random() < 0.4 and t + length <= T:
        ids[r, t:t + length] = rng.integers(30, 40, length)
        tags[r, t], tags[r, t + 1:t + length] = 1, 2
        t += length + 1  # entities are separated by at least one word
      else:
        t += 1
  ids[:, 0], tags[:, 0] = CLS, -1
  return {"input_ids": ids, "segment_ids": np.ones_like(ids), "labels": tags}


def _qa(rng, rows):
  """[CLS] q [SEP] context: the answer is the span of colour q (tokens 30-34 for q = 5, 35-39
  for q = 6); the context holds one span of each colour."""
  ids = _filler(rng, rows, 10, 30)
  start = np.zeros(rows, np.int32)
  end = np.zeros(rows, np.int32)
  question = rng.integers(0, 2, rows)
  for r in range(rows):
    spans = []
    for colour in (0, 1):
      while True:
        length = int(rng.integers(1, 4))
        s = int(rng.integers(3, T - length + 1))
        if all(s + length < a or b < s - 1 for a, b in spans):
          break
      spans.append((s, s + length - 1))
      ids[r, s:s + length] = rng.integers(30 + 5 * colour, 35 + 5 * colour, length)
    start[r], end[r] = spans[question[r]]
  ids[:, 0], ids[:, 1], ids[:, 2] = CLS, FIRST + question, SEP
  types = np.zeros_like(ids)
  types[:, 3:] = 1
  return {"input_ids": ids, "segment_ids": np.ones_like(ids), "token_type_ids": types,
          "start_positions": start, "end_positions": end}


def _pairs(mode):
  """[CLS] A [SEP] B [SEP] over counting sequences (each token one more than the last, mod the
  alphabet): masked tokens follow from their neighbours; NSP: does B continue A; SOP: is the
  order swapped."""

  def make(rng, rows):
    ids = np.zeros((rows, T), np.int32)
    labels = rng.integers(0, 2, rows).astype(np.int32)
    n = VOCAB - FIRST
    for r in range(rows):
      la = int(rng.integers(4, 9))
      lb = T - 3 - la
      start = int(rng.integers(0, n))
      a = (start + np.arange(la)) % n
      b = (start + la + np.arange(lb)) % n
      if labels[r] and mode == "nsp":
        b = (int(rng.integers(0, n)) + np.arange(lb)) % n
        labels[r] = int(b[0] != (a[-1] + 1) % n)
      elif labels[r]:
        a, b = b, a
      ids[r] = np.concatenate([[CLS], a + FIRST, [SEP], b + FIRST, [SEP]])
    types = (np.cumsum(ids == SEP, axis=1) - (ids == SEP) >= 1).astype(np.int32)
    return {"input_ids": ids, "segment_ids": np.ones_like(ids), "token_type_ids": types,
            "pair_label": labels}

  return make


def _mlm_prepare(objective):
  pairs = {"mlm_nsp": "nsp", "mlm_sop": "sop"}.get(objective, "none")
  heads = {"mlm": ("mlm",), "mlm_nsp": ("mlm", "nsp"), "mlm_sop": ("mlm", "sop")}[objective]
  config = ExperimentConfig(
      model=ModelConfig(**MODEL, encoder_heads=heads),
      data=DataConfig(seq_len=T, pack=pairs == "none", pairs=pairs),
      train=TrainConfig(objective=objective))
  prepare = objectives.get(objective).prepare
  return lambda batch, epoch: prepare(batch, tokenizer=TOKENIZER, config=config, epoch=epoch)


# Classification is learnt (accuracy 1.0) well within 200 steps; QA needs about 500.
@pytest.mark.parametrize("objective, heads, make, metric, floor, steps", [
    ("classification", ("classification",), _classification, "accuracy", 0.97, 200),
    ("extractive_qa", ("extractive_qa",), _qa, "exact_match", 0.9, 600),
])
def test_sequence_heads_fine_tune(objective, heads, make, metric, floor, steps):
  cfg = ModelConfig(**MODEL, encoder_heads=heads, num_labels=3)
  result = _fit(cfg, objective, make, steps=steps)
  assert result[metric] >= floor, result


@pytest.mark.parametrize("crf", [False, True])
def test_token_classification_fine_tunes_with_and_without_a_crf(crf):
  cfg = ModelConfig(**MODEL, encoder_heads=("token_classification",), num_labels=3, crf=crf)
  result = _fit(cfg, "token_classification", _ner)
  assert result["accuracy"] >= 0.97, result


@pytest.mark.parametrize("objective", ["mlm_nsp", "mlm_sop"])
def test_mlm_with_pair_prediction_learns_both(objective):
  head = objective.removeprefix("mlm_")
  cfg = ModelConfig(**MODEL, encoder_heads=("mlm", head))
  result = _fit(cfg, objective, _pairs(head), prepare=_mlm_prepare(objective))
  # Chance: 13% of masked tokens (the tenth left unchanged, plus 1/35), 50% of pairs. A masked
  # token needs an intact neighbour and the successor map; NSP needs the offset of B.
  assert result["accuracy"] >= 0.7 and result[f"{head}_accuracy"] >= 0.8, result
  assert result["loss"] == pytest.approx(result["mlm_loss"] + result[f"{head}_loss"], rel=1e-5)


# ------------------------------------------------------------------------------- config


@pytest.mark.parametrize("changes, needle", [
    (dict(train=TrainConfig(objective="mlm"), model=ModelConfig()),
     "train.objective='mlm' does not train model.family='decoder'; it trains: encoder"),
    (dict(model=ModelConfig(**MODEL, encoder_heads=("mlm",)),
          train=TrainConfig(objective="mlm_nsp")), "model.encoder_heads to include ['nsp']"),
    (dict(model=ModelConfig(**MODEL, encoder_heads=("mlm", "nsp")),
          train=TrainConfig(objective="mlm_nsp")), "needs data.pairs='nsp'"),
    (dict(model=ModelConfig(**MODEL)), "train.objective='causal_lm' does not train model.family='encoder'"),
])
def test_experiment_refuses_mismatched_objectives(changes, needle):
  with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("(", r"\(")):
    ExperimentConfig(**{"data": DataConfig(seq_len=T), **changes})


def _cli_config(name, workdir):
  from research.train import __main__ as cli

  return cli.parse(["--config", name, "--workdir", str(workdir), "train.steps=3",
                    "train.log_every=3", "train.eval_every=3", "train.eval_batches=1",
                    "train.progress=false", "mesh.data=1", f"data.cache_dir={workdir}"])[0]


@pytest.mark.parametrize("name, objective", [
    ("bert-base-smoke", "mlm_nsp"), ("roberta-base-smoke", "mlm"), ("albert-base-smoke", "mlm_sop"),
])
def test_presets_train_with_their_objective_from_the_cli(name, objective, tmp_path):
  # Each of these configs trains two steps through the loop in
  # test_train_loop.py::test_every_preset_smoke_variant_trains_two_steps.
  config = _cli_config(name, tmp_path)
  assert config.train.objective == objective and not objectives.get(objective).samples_text


def test_an_encoder_preset_trains_from_the_cli_and_samples_no_text(tmp_path):
  from research.train import loop

  config = _cli_config("roberta-base-smoke", tmp_path)
  assert config.train.sample_tokens > 0  # the smoke config samples: a decoder would write text
  summary = loop.train(config, tmp_path)
  assert summary["step"] == 3 and np.isfinite(summary["loss"]) and np.isfinite(summary["eval_loss"])
  assert not (tmp_path / "samples.txt").exists()


def test_sharded_training_equals_one_device():
  """MLM + SOP on an ALBERT-style model (factorised embedding, shared layers, token types) over
  data x fsdp x tensor = 2 x 2 x 2 follows the single-device trajectory: every new logical name
  (token_types, factor_embed, labels) has a rule."""
  from jax.sharding import PartitionSpec as P

  from research.config.mesh import MeshConfig
  from research.sharding.mesh import make_mesh
  from research.sharding.plan import plan_training

  cfg = ModelConfig(**MODEL, embed_dim=16, albert_sharing="all", encoder_heads=("mlm", "sop"))
  batch = _mlm_prepare("mlm_sop")(_pairs("sop")(np.random.default_rng(0), 16), 0)
  params = jax.device_get(registry.init_params(cfg, jax.random.key(0)))
  tx, schedule = opt_lib.build(OptimizerConfig(name="sgd", lr=0.5, momentum=0.9, warmup_steps=0), 10)
  results = []
  for mesh_cfg, devices in ((MeshConfig(data=1), jax.devices()[:1]),
                            (MeshConfig(data=2, fsdp=2, tensor=2), jax.devices()[:8])):
    plan = plan_training(cfg, tx, mesh_cfg, make_mesh(mesh_cfg, devices))
    state = jax.device_put(TrainState.create(params, tx, jax.random.key(1)), plan.state)
    step = make_train_step(registry.build(cfg), objectives.get("mlm_sop").loss, tx, schedule,
                           TrainConfig(), grad_shardings=plan.grads)
    with plan.scope():
      step = jax.jit(step, in_shardings=(plan.state, plan.batch), out_shardings=(plan.state, None))
      losses = []
      for _ in range(3):
        state, metrics = step(state, {k: jax.device_put(v, plan.batch) for k, v in batch.items()})
        losses.append(float(metrics["loss"]))
    results.append((losses, jax.device_get(state.params)))
  specs = jax.tree.map(lambda sh: sh.spec, plan.state.params)
  assert specs["embed"]["token_types"]["embedding"] == P(None, "fsdp")
  assert specs["embed"]["tokens"]["embedding"] == P("tensor", "fsdp")
  assert specs["blocks"]["shared"]["attn"]["q"]["kernel"] == P("fsdp", "tensor", None)
  (ref_losses, ref), (losses, sharded) = results
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert ref_losses[-1] < ref_losses[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), sharded, ref)
