"""Pieces the encoder-only converters (research/hf/bert.py, albert.py) share: which transformers
class a set of heads is, the head tensors' rules, and the checks common to the three types.

A checkpoint's heads come from config.json's `architectures` (a config without it is read as
`*ForMaskedLM`); `hf.load(path, encoder_heads=..., pooler=...)` picks others. Head and pooler
tensors a model has no place for are skipped on load, as transformers skips them (a
pretraining checkpoint loads into a masked-LM model), and so are the tied decoder copies
older checkpoints store.
"""

from __future__ import annotations

from typing import Any

from research.config.model import ModelConfig
from research.hf import config_maps
from research.hf.config_maps import HFConfig
from research.hf.tensors import Dense, Rule

# transformers class suffix -> (our heads, pooler). Heads are compared as sets.
_PRETRAINING = {"bert": ("mlm", "nsp"), "albert": ("mlm", "sop")}
_SUFFIXES = {
    "Model": ((), True),
    "ForMaskedLM": (("mlm",), False),
    "ForSequenceClassification": (("classification",), True),
    "ForTokenClassification": (("token_classification",), False),
    "ForQuestionAnswering": (("extractive_qa",), False),
}


def _suffixes(model_type: str) -> dict[str, tuple[tuple[str, ...], bool]]:
  out = dict(_SUFFIXES)
  if model_type in _PRETRAINING:
    out["ForPreTraining"] = (_PRETRAINING[model_type], True)
  return out


def heads_from_hf(hf: HFConfig, class_prefix: str) -> dict[str, Any]:
  """encoder_heads, pooler and num_labels of the checkpoint's transformers class."""
  architectures = hf.values.get("architectures") or [f"{class_prefix}ForMaskedLM"]
  name = architectures[0]
  suffixes = _suffixes(hf.model_type)
  suffix = name[len(class_prefix):] if name.startswith(class_prefix) else None
  if suffix not in suffixes:
    raise hf.refuse("architectures", architectures, "supported classes: " + ", ".join(
        class_prefix + s for s in suffixes))
  heads, pooler = suffixes[suffix]
  labels = hf.values.get("id2label")
  num_labels = len(labels) if labels else int(hf.values.get("num_labels", 2))
  return dict(encoder_heads=heads, pooler=pooler, num_labels=num_labels)


def architecture(cfg: ModelConfig, model_type: str, class_prefix: str) -> str | None:
  """The transformers class of `cfg`'s heads and pooler, or None when none has them."""
  for suffix, (heads, pooler) in _suffixes(model_type).items():
    if set(heads) == set(cfg.encoder_heads) and pooler == cfg.pooler:
      return class_prefix + suffix
  return None


def heads_to_hf(cfg: ModelConfig) -> dict[str, Any]:
  if not {"classification", "token_classification"} & set(cfg.encoder_heads):
    return {}
  labels = {i: f"LABEL_{i}" for i in range(cfg.num_labels)}
  return {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}


def mlm_rules(dense: str, norm: str, bias: str) -> tuple[Rule, ...]:
  """The masked-LM head's transform, its norm and the output bias (the decoder is tied)."""
  return (
      Rule(dense + ".weight", "mlm/transform/kernel", Dense()),
      Rule(dense + ".bias", "mlm/transform/bias"),
      Rule(norm + ".weight", "mlm/norm/scale"),
      Rule(norm + ".bias", "mlm/norm/bias"),
      Rule(bias, "mlm/bias"),
  )


def head_rules(model_type: str) -> tuple[Rule, ...]:
  """Rules of the fine-tuning heads (the same tensor names in bert, roberta and albert; RoBERTa's
  classification head is research/hf/bert.py's own)."""
  rules = (
      Rule("classifier.weight", "token_classification/dense/kernel", Dense()),
      Rule("classifier.bias", "token_classification/dense/bias"),
      Rule("qa_outputs.weight", "extractive_qa/dense/kernel", Dense()),
      Rule("qa_outputs.bias", "extractive_qa/dense/bias"),
  )
  if model_type != "roberta":
    rules += (Rule("classifier.weight", "classification/dense/kernel", Dense()),
              Rule("classifier.bias", "classification/dense/bias"))
  return rules


def read_common(hf: HFConfig) -> dict[str, Any]:
  """ModelConfig fields every BERT-like config.json maps the same way."""
  hf.require("position_embedding_type", ("absolute",))
  hf.require("is_decoder", (False,))
  hf.require("add_cross_attention", (False,))
  hf.require("tie_word_embeddings", (True,))
  d, n = hf["hidden_size"], hf["num_attention_heads"]
  if d % n:
    raise hf.refuse("num_attention_heads", n, f"must divide hidden_size={d}")
  dropout = hf["hidden_dropout_prob"]
  return dict(
      family="encoder", vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"],
      n_heads=n, d_ff=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
      norm="layernorm", norm_bias=True, norm_eps=hf["layer_norm_eps"], norm_placement="post",
      embed_norm=True, activation=config_maps.activation_from_hf(hf, "hidden_act", gated=False),
      position="learned", qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True,
      type_vocab_size=hf["type_vocab_size"], embed_dropout=dropout, resid_dropout=dropout,
      attn_dropout=hf["attention_probs_dropout_prob"], init_std=hf["initializer_range"])


def write_common(cfg: ModelConfig) -> dict[str, Any]:
  return dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
      num_attention_heads=cfg.n_heads, intermediate_size=cfg.ffn_hidden,
      hidden_act=config_maps.activation_to_hf(cfg), hidden_dropout_prob=cfg.resid_dropout,
      attention_probs_dropout_prob=cfg.attn_dropout, max_position_embeddings=cfg.max_seq_len,
      type_vocab_size=cfg.type_vocab_size, initializer_range=cfg.init_std,
      layer_norm_eps=cfg.norm_eps, tie_word_embeddings=True, position_embedding_type="absolute",
      **heads_to_hf(cfg))


def common_mismatches(cfg: ModelConfig, model_type: str, class_prefix: str) -> list[str]:
  """Choices none of the BERT-like types expresses."""
  reasons = config_maps.mismatches(
      cfg, family="encoder", norm="layernorm", norm_bias=True, norm_placement="post",
      has_final_norm=False, embed_norm=True, gated=False, position="learned", qkv_bias=True,
      out_bias=True, mlp_bias=True, parallel_block=False, attn_scale=None,
      num_kv_heads=cfg.n_heads, tie_embeddings=True, moe_experts=0, crf=False,
      embed_dropout=cfg.resid_dropout, embed_scale=False)
  reasons += config_maps.derived_head_dim(cfg)
  if cfg.type_vocab_size < 1:
    reasons.append("type_vocab_size=0 (transformers always has a token-type table; use 1)")
  if config_maps.activation_to_hf(cfg) is None:
    reasons.append(f"activation={cfg.activation!r} (no HF activation name)")
  if architecture(cfg, model_type, class_prefix) is None:
    known = "; ".join(f"{class_prefix}{s}: {sorted(h) or 'no heads'}, pooler={p}"
                      for s, (h, p) in _suffixes(model_type).items())
    reasons.append(f"encoder_heads={cfg.encoder_heads!r} with pooler={cfg.pooler} (no "
                   f"transformers class has them; {known})")
  return reasons


# Tensors skipped on load when the model has no place for them: heads, poolers, the tied
# decoder copies of older checkpoints, and position/type id buffers.
IGNORED = (
    r"(^|\.)pooler\.", r"^cls\.", r"^predictions\.", r"^lm_head\.", r"^sop_classifier\.",
    r"^classifier\.", r"^qa_outputs\.", r"embeddings\.(position_ids|token_type_ids)$",
)
