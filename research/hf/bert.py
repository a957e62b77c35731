"""BERT and RoBERTa: post-LayerNorm encoders with learned positions and token-type embeddings.

RoBERTa is BERT's architecture with its own tensor prefix and head names (`lm_head`, and a
classification head `classifier.dense` + `classifier.out_proj`, which is our pooler plus a
classifier) and position ids offset past `pad_token_id` (our `position_padding_idx`).
The class written to `architectures` follows the heads (research/hf/encoder_maps.py).
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import encoder_maps, registry
from research.hf.config_maps import HFConfig, mismatches
from research.hf.tensors import Dense, Flat, Rule

_BLOCK = "blocks/layers_{i}/"
_CLASS = {"bert": "Bert", "roberta": "Roberta"}
_PREFIX = {"bert": "bert.", "roberta": "roberta."}


def _base_rules(p: str) -> tuple[Rule, ...]:
  layer = p + "encoder.layer.{i}."
  return (
      Rule(p + "embeddings.word_embeddings.weight", "embed/tokens/embedding"),
      Rule(p + "embeddings.position_embeddings.weight", "embed/positions/embedding"),
      Rule(p + "embeddings.token_type_embeddings.weight", "embed/token_types/embedding"),
      Rule(p + "embeddings.LayerNorm.weight", "embed/norm/scale"),
      Rule(p + "embeddings.LayerNorm.bias", "embed/norm/bias"),
      *[Rule(layer + f"attention.self.{name}.weight", _BLOCK + f"attn/{ours}/kernel", Dense())
        for name, ours in (("query", "q"), ("key", "k"), ("value", "v"))],
      *[Rule(layer + f"attention.self.{name}.bias", _BLOCK + f"attn/{ours}/bias", Flat())
        for name, ours in (("query", "q"), ("key", "k"), ("value", "v"))],
      Rule(layer + "attention.output.dense.weight", _BLOCK + "attn/o/kernel", Dense(in_dims=2)),
      Rule(layer + "attention.output.dense.bias", _BLOCK + "attn/o/bias"),
      Rule(layer + "attention.output.LayerNorm.weight", _BLOCK + "attn_norm/scale"),
      Rule(layer + "attention.output.LayerNorm.bias", _BLOCK + "attn_norm/bias"),
      Rule(layer + "intermediate.dense.weight", _BLOCK + "mlp/wi/kernel", Dense()),
      Rule(layer + "intermediate.dense.bias", _BLOCK + "mlp/wi/bias"),
      Rule(layer + "output.dense.weight", _BLOCK + "mlp/wo/kernel", Dense()),
      Rule(layer + "output.dense.bias", _BLOCK + "mlp/wo/bias"),
      Rule(layer + "output.LayerNorm.weight", _BLOCK + "mlp_norm/scale"),
      Rule(layer + "output.LayerNorm.bias", _BLOCK + "mlp_norm/bias"),
  )


def tensors(cfg: ModelConfig, model_type: str) -> tuple[Rule, ...]:
  p = _PREFIX[model_type]
  rules = _base_rules(p) + encoder_maps.head_rules(model_type)
  if model_type == "bert":
    return rules + encoder_maps.mlm_rules(
        "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
        "cls.predictions.bias") + (
        Rule(p + "pooler.dense.weight", "pooler/dense/kernel", Dense()),
        Rule(p + "pooler.dense.bias", "pooler/dense/bias"),
        Rule("cls.seq_relationship.weight", "nsp/dense/kernel", Dense()),
        Rule("cls.seq_relationship.bias", "nsp/dense/bias"))
  rules += encoder_maps.mlm_rules("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
  if "classification" in cfg.encoder_heads:
    # RobertaClassificationHead: dense + tanh on <s> (our pooler), then out_proj.
    return rules + (
        Rule("classifier.dense.weight", "pooler/dense/kernel", Dense()),
        Rule("classifier.dense.bias", "pooler/dense/bias"),
        Rule("classifier.out_proj.weight", "classification/dense/kernel", Dense()),
        Rule("classifier.out_proj.bias", "classification/dense/bias"))
  return rules + (Rule(p + "pooler.dense.weight", "pooler/dense/kernel", Dense()),
                  Rule(p + "pooler.dense.bias", "pooler/dense/bias"))


_DEFAULTS = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
    initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
    position_embedding_type="absolute", is_decoder=False, add_cross_attention=False,
    tie_word_embeddings=True, classifier_dropout=None,
)
_TYPE_DEFAULTS = {"bert": {}, "roberta": dict(vocab_size=50265, pad_token_id=1)}


def config_from_hf(values, model_type: str) -> dict:
  hf = HFConfig(values, {**_DEFAULTS, **_TYPE_DEFAULTS[model_type]}, model_type)
  fields = encoder_maps.read_common(hf)
  fields.update(encoder_maps.heads_from_hf(hf, _CLASS[model_type]))
  fields["head_dropout"] = hf["classifier_dropout"]
  if model_type == "roberta":
    fields["position_padding_idx"] = hf["pad_token_id"]
  return fields


def config_to_hf(cfg: ModelConfig, model_type: str) -> dict:
  out = encoder_maps.write_common(cfg)
  out["classifier_dropout"] = cfg.head_dropout
  if model_type == "roberta":
    out["pad_token_id"] = cfg.position_padding_idx
  return out


def unsupported(cfg: ModelConfig, model_type: str) -> list[str]:
  reasons = encoder_maps.common_mismatches(cfg, model_type, _CLASS[model_type])
  reasons += mismatches(cfg, embed_dim=None, albert_sharing="none")
  if model_type == "bert":
    reasons += mismatches(cfg, position_padding_idx=None)
  elif cfg.position_padding_idx is None:
    reasons.append("position_padding_idx=None (RoBERTa offsets positions past pad_token_id)")
  return reasons


for _type in ("bert", "roberta"):
  registry.register(registry.Converter(
      model_type=_type, architecture=f"{_CLASS[_type]}ForMaskedLM", base_prefix=_PREFIX[_type],
      config_from_hf=lambda values, t=_type: config_from_hf(values, t),
      config_to_hf=lambda cfg, t=_type: config_to_hf(cfg, t),
      unsupported=lambda cfg, t=_type: unsupported(cfg, t),
      tensors=lambda cfg, t=_type: tensors(cfg, t),
      ignored=registry.COMMON_IGNORED + encoder_maps.IGNORED,
      architecture_for=lambda cfg, t=_type: encoder_maps.architecture(cfg, t, _CLASS[t]),
  ))
