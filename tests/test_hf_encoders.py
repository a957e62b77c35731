"""research.hf.bert / albert: BERT, RoBERTa and ALBERT checkpoints against transformers.

The standard of tests/hf_support.py: every parameter perturbed, three rows (unpadded, left- and
right-padded), and max |ours - reference| / max |reference| <= 1e-4 over the real positions;
here with random token_type_ids too, and each head's outputs compared.
"""

import jax
import numpy as np
import pytest
import torch
import transformers

import research.hf
from hf_support import (PARITY_TOL, SEQ, assert_loads_back, perturb, random_params, relative_error,
                        save_and_open)
from research import presets

_SMALL = dict(vocab_size=128, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=96, max_position_embeddings=40)

# case -> (model_type, transformers class, config, {our output: transformers output}).
CASES = {
    "bert_mlm": ("bert", "BertForMaskedLM", dict(_SMALL), {"mlm": "logits"}),
    "bert_pretraining": ("bert", "BertForPreTraining", dict(_SMALL, hidden_act="gelu_new"),
                         {"mlm": "prediction_logits", "nsp": "seq_relationship_logits"}),
    "bert_classification": ("bert", "BertForSequenceClassification", dict(_SMALL, num_labels=3),
                            {"classification": "logits"}),
    "bert_ner": ("bert", "BertForTokenClassification", dict(_SMALL, num_labels=5),
                 {"token_classification": "logits"}),
    "bert_qa": ("bert", "BertForQuestionAnswering", dict(_SMALL),
                {"extractive_qa/start": "start_logits", "extractive_qa/end": "end_logits"}),
    "roberta_mlm": ("roberta", "RobertaForMaskedLM",
                    dict(_SMALL, type_vocab_size=1, layer_norm_eps=1e-5), {"mlm": "logits"}),
    "roberta_classification": ("roberta", "RobertaForSequenceClassification",
                               dict(_SMALL, num_labels=4), {"classification": "logits"}),
    "albert_mlm": ("albert", "AlbertForMaskedLM", dict(_SMALL, embedding_size=16),
                   {"mlm": "logits"}),
    "albert_pretraining_unshared": (
        "albert", "AlbertForPreTraining", dict(_SMALL, embedding_size=16, num_hidden_groups=2),
        {"mlm": "prediction_logits", "sop": "sop_logits"}),
    "albert_qa": ("albert", "AlbertForQuestionAnswering", dict(_SMALL, embedding_size=48),
                  {"extractive_qa/start": "start_logits", "extractive_qa/end": "end_logits"}),
}


def _reference(model_type, cls, config, seed=0):
  hf_config = transformers.AutoConfig.for_model(model_type, **config)
  torch.manual_seed(seed)
  return perturb(getattr(transformers, cls)._from_config(
      hf_config, attn_implementation="eager", dtype=torch.float32))


def _batch(vocab, pad, type_vocab, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, (3, SEQ)).astype(np.int64)
  mask = np.ones((3, SEQ), np.int64)
  mask[1, :3] = 0
  mask[2, -4:] = 0
  ids = np.where(mask == 1, ids, pad)
  types = rng.integers(0, type_vocab, (3, SEQ)).astype(np.int64)
  return ids, mask, types


def _outputs(reference, ids, mask, types):
  with torch.no_grad():
    out = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types))
  return out


def _ours(model, params, ids, mask, types):
  fn = jax.jit(lambda p, i, m, t: model.apply(
      {"params": p}, input_ids=i, attention_mask=m, token_type_ids=t))
  return fn(params, *(x.astype(np.int32) for x in (ids, mask, types)))


def _pick(out, key):
  for part in key.split("/"):
    out = out[part]
  return np.asarray(out)


def _assert_outputs_match(model, params, reference, pairs, seed=0):
  cfg = model.cfg
  pad = cfg.position_padding_idx or 0
  ids, mask, types = _batch(cfg.vocab_size, pad, cfg.type_vocab_size, seed)
  ref = _outputs(reference, ids, mask, types)
  ours = _ours(model, params, ids, mask, types)
  for our_key, hf_key in pairs.items():
    expected = getattr(ref, hf_key).float().numpy()
    got = _pick(ours, our_key)
    assert got.shape == expected.shape, our_key
    # Per-token outputs are compared at real tokens; per-sequence ones (read from the first
    # token) on rows whose first token is real: a left-padded row's [CLS] is padding, whose
    # hidden state transformers computes from every real key and we from none.
    rows = mask if got.ndim >= 2 and got.shape[1] == SEQ else mask[:, 0]
    err = relative_error(got, expected, rows)
    assert err <= PARITY_TOL, f"{our_key}: relative error {err:.2e} > {PARITY_TOL}"


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_transformers(case, tmp_path):
  model_type, cls, config, pairs = CASES[case]
  reference = _reference(model_type, cls, config)
  reference.save_pretrained(tmp_path)
  model, params = research.hf.load(tmp_path)
  assert model.cfg.family == "encoder"
  _assert_outputs_match(model, params, reference, pairs)


def test_config_reads_heads_sharing_and_positions():
  albert = research.hf.config_from_hf({"model_type": "albert", **_SMALL, "embedding_size": 16,
                                       "architectures": ["AlbertForPreTraining"]})
  assert (albert.albert_sharing, albert.embed_dim, albert.pooler) == ("all", 16, True)
  assert set(albert.encoder_heads) == {"mlm", "sop"} and albert.activation == "gelu_tanh"
  roberta = research.hf.config_from_hf({"model_type": "roberta", **_SMALL})
  assert (roberta.position_padding_idx, roberta.encoder_heads, roberta.pooler) == (1, ("mlm",), False)
  with pytest.raises(research.hf.ConversionError, match="position_embedding_type='relative_key'"):
    research.hf.config_from_hf({"model_type": "bert", **_SMALL,
                                "position_embedding_type": "relative_key"})
  with pytest.raises(research.hf.ConversionError, match="num_hidden_groups=3"):
    research.hf.config_from_hf({"model_type": "albert", **_SMALL, "num_hidden_layers": 6,
                                "num_hidden_groups": 3})
  with pytest.raises(research.hf.ConversionError, match="BertForMultipleChoice"):
    research.hf.config_from_hf({"model_type": "bert", **_SMALL,
                                "architectures": ["BertForMultipleChoice"]})


def test_a_pretraining_checkpoint_loads_as_masked_lm(tmp_path):
  """As transformers does, the heads a model lacks are skipped: BertForPreTraining's pooler and
  NSP weights load into a masked-LM model, whose logits are the pretraining model's."""
  reference = _reference("bert", "BertForPreTraining", dict(_SMALL))
  reference.save_pretrained(tmp_path)
  model, params = research.hf.load(tmp_path, encoder_heads=("mlm",), pooler=False)
  assert "pooler" not in params and "nsp" not in params
  _assert_outputs_match(model, params, reference, {"mlm": "prediction_logits"})


@pytest.mark.parametrize("name, heads, pooler, cls", [
    ("bert-base-smoke", ("mlm", "nsp"), True, "BertForPreTraining"),
    ("roberta-base-smoke", ("mlm",), False, "RobertaForMaskedLM"),
    ("roberta-base-smoke", ("classification",), True, "RobertaForSequenceClassification"),
    ("albert-base-smoke", ("mlm", "sop"), True, "AlbertForPreTraining"),
    ("albert-base-smoke", (), True, "AlbertModel"),
])
def test_our_params_round_trip_through_transformers(name, heads, pooler, cls, tmp_path):
  cfg = presets.get(name, encoder_heads=heads, pooler=pooler, num_labels=3)
  model, params = random_params(cfg)
  path, reference = save_and_open(model, params, tmp_path, getattr(transformers, cls))
  pairs = {"mlm": "prediction_logits" if "ForPreTraining" in cls else "logits",
           "nsp": "seq_relationship_logits", "sop": "sop_logits", "classification": "logits"}
  if not heads:
    pairs = {"hidden": "last_hidden_state", "pooled": "pooler_output"}
  _assert_outputs_match(model, params, reference,
                        {k: v for k, v in pairs.items() if k in heads or not heads}, seed=1)
  assert_loads_back(path, cfg, params)


def test_configs_transformers_cannot_hold_are_refused():
  with pytest.raises(research.hf.ConversionError, match="albert_sharing='ffn'"):
    research.hf.config_to_hf(presets.get("albert-base-smoke", albert_sharing="ffn",
                                         scan_layers=False), "albert")
  with pytest.raises(research.hf.ConversionError, match="norm_placement='pre'"):
    research.hf.config_to_hf(presets.get("bert-base-smoke", norm_placement="pre"), "bert")
  with pytest.raises(research.hf.ConversionError, match="no transformers class has them"):
    research.hf.config_to_hf(presets.get("bert-base-smoke", encoder_heads=("mlm", "sop")), "bert")
