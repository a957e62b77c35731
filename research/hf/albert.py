"""ALBERT: BERT's post-LayerNorm layer with a factorised embedding and shared layers.

transformers' ALBERT groups the `num_hidden_layers` steps into `num_hidden_groups` groups of
`inner_group_num` layers each; layer l runs group l * groups // n_layers. One group of one
layer is our `albert_sharing="all"` (`blocks/shared/...`); as many groups as layers is
`"none"`. The paper's partial modes (shared attention or FFN only) and several inner layers
have no transformers form. The embeddings are `embedding_size` wide (our `embed_dim`), with
`encoder.embedding_hidden_mapping_in` as the E x H projection, which ALBERT always has.
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import encoder_maps, registry
from research.hf.config_maps import HFConfig, mismatches
from research.hf.tensors import Dense, Flat, Rule

_P = "albert."


def _layer_rules(hf: str, ours: str) -> tuple[Rule, ...]:
  qkv = (("query", "q"), ("key", "k"), ("value", "v"))
  return (
      *[Rule(hf + f"attention.{name}.weight", ours + f"attn/{o}/kernel", Dense()) for name, o in qkv],
      *[Rule(hf + f"attention.{name}.bias", ours + f"attn/{o}/bias", Flat()) for name, o in qkv],
      Rule(hf + "attention.dense.weight", ours + "attn/o/kernel", Dense(in_dims=2)),
      Rule(hf + "attention.dense.bias", ours + "attn/o/bias"),
      Rule(hf + "attention.LayerNorm.weight", ours + "attn_norm/scale"),
      Rule(hf + "attention.LayerNorm.bias", ours + "attn_norm/bias"),
      Rule(hf + "ffn.weight", ours + "mlp/wi/kernel", Dense()),
      Rule(hf + "ffn.bias", ours + "mlp/wi/bias"),
      Rule(hf + "ffn_output.weight", ours + "mlp/wo/kernel", Dense()),
      Rule(hf + "ffn_output.bias", ours + "mlp/wo/bias"),
      Rule(hf + "full_layer_layer_norm.weight", ours + "mlp_norm/scale"),
      Rule(hf + "full_layer_layer_norm.bias", ours + "mlp_norm/bias"),
  )


def tensors(cfg: ModelConfig) -> tuple[Rule, ...]:
  group = _P + "encoder.albert_layer_groups.{}.albert_layers.0."
  if cfg.albert_sharing == "all":
    layers = _layer_rules(group.format(0), "blocks/shared/")
  else:
    layers = _layer_rules(group.format("{i}"), "blocks/layers_{i}/")
  return (
      Rule(_P + "embeddings.word_embeddings.weight", "embed/tokens/embedding"),
      Rule(_P + "embeddings.position_embeddings.weight", "embed/positions/embedding"),
      Rule(_P + "embeddings.token_type_embeddings.weight", "embed/token_types/embedding"),
      Rule(_P + "embeddings.LayerNorm.weight", "embed/norm/scale"),
      Rule(_P + "embeddings.LayerNorm.bias", "embed/norm/bias"),
      Rule(_P + "encoder.embedding_hidden_mapping_in.weight", "embed/project/kernel", Dense()),
      Rule(_P + "encoder.embedding_hidden_mapping_in.bias", "embed/project/bias"),
      *layers,
      Rule(_P + "pooler.weight", "pooler/dense/kernel", Dense()),
      Rule(_P + "pooler.bias", "pooler/dense/bias"),
      *encoder_maps.mlm_rules("predictions.dense", "predictions.LayerNorm", "predictions.bias"),
      Rule("sop_classifier.classifier.weight", "sop/dense/kernel", Dense()),
      Rule("sop_classifier.classifier.bias", "sop/dense/bias"),
      *encoder_maps.head_rules("albert"),
  )


_DEFAULTS = dict(
    vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
    num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384, inner_group_num=1,
    hidden_act="gelu_new", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
    classifier_dropout_prob=0.1, position_embedding_type="absolute", is_decoder=False,
    add_cross_attention=False, tie_word_embeddings=True,
)


def config_from_hf(values) -> dict:
  hf = HFConfig(values, _DEFAULTS, "albert")
  hf.require("inner_group_num", (1,))
  fields = encoder_maps.read_common(hf)
  groups, n_layers = hf["num_hidden_groups"], hf["num_hidden_layers"]
  if groups not in (1, n_layers):
    raise hf.refuse("num_hidden_groups", groups, f"research models share all {n_layers} layers "
                    "(1 group) or none (a group per layer)")
  fields.update(encoder_maps.heads_from_hf(hf, "Albert"))
  return dict(fields, embed_dim=hf["embedding_size"], head_dropout=hf["classifier_dropout_prob"],
              albert_sharing="all" if groups == 1 else "none")


def config_to_hf(cfg: ModelConfig) -> dict:
  return dict(
      encoder_maps.write_common(cfg), embedding_size=cfg.embedding_width,
      num_hidden_groups=1 if cfg.albert_sharing == "all" else cfg.n_layers, inner_group_num=1,
      classifier_dropout_prob=cfg.resid_dropout if cfg.head_dropout is None else cfg.head_dropout)


def unsupported(cfg: ModelConfig) -> list[str]:
  reasons = encoder_maps.common_mismatches(cfg, "albert", "Albert")
  reasons += mismatches(cfg, position_padding_idx=None, albert_sharing=("all", "none"))
  if cfg.embed_dim is None:
    reasons.append("embed_dim=None (ALBERT always projects its embeddings; set embed_dim)")
  return reasons


registry.register(registry.Converter(
    model_type="albert", architecture="AlbertForMaskedLM", base_prefix=_P,
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, unsupported=unsupported,
    tensors=tensors, ignored=registry.COMMON_IGNORED + encoder_maps.IGNORED,
    architecture_for=lambda cfg: encoder_maps.architecture(cfg, "albert", "Albert"),
))
