"""T5 (Raffel et al. 2020) v1.0 and v1.1: pre-RMSNorm encoder-decoder, relative position bias
buckets learned by the first layer of each stack and shared by all its layers, no score
scaling, one token embedding shared by encoder, decoder and (v1.0) the output head.

v1.0 (t5-small, t5-base, ...): ReLU FFN, tied head, decoder output scaled by d_model^-0.5.
v1.1 (google/t5-v1_1-*): gated-GELU (tanh) FFN, untied head, no scaling.

transformers 4 tied and scaled exactly when `tie_word_embeddings`. transformers 5 sets the two
apart: `scale_decoder_outputs` (else `tie_word_embeddings`) decides the scaling, and the head is
always tied to `shared.weight` unless the checkpoint stores an `lm_head.weight` of other values.
So a v1.1 model built and saved by transformers 5 is tied and unscaled, with no lm_head tensor.
`load` decides the tying from the checkpoint as transformers 5 does; `config_from_hf` alone
reads it from `tie_word_embeddings`. Both keys are written.
"""

from __future__ import annotations

import numpy as np

from research.config.model import ModelConfig
from research.hf import config_maps, registry
from research.hf.config_maps import HFConfig
from research.hf.tensors import Dense, Rule


def _attention(hf_prefix: str, ours: str) -> tuple[Rule, ...]:
  return (
      Rule(hf_prefix + "q.weight", ours + "q/kernel", Dense()),
      Rule(hf_prefix + "k.weight", ours + "k/kernel", Dense()),
      Rule(hf_prefix + "v.weight", ours + "v/kernel", Dense()),
      Rule(hf_prefix + "o.weight", ours + "o/kernel", Dense(in_dims=2)),
  )


def _ffn(hf_prefix: str, ours: str) -> tuple[Rule, ...]:
  return (
      Rule(hf_prefix + "wi.weight", ours + "wi/kernel", Dense()),
      Rule(hf_prefix + "wi_0.weight", ours + "wi_gate/kernel", Dense()),
      Rule(hf_prefix + "wi_1.weight", ours + "wi_up/kernel", Dense()),
      Rule(hf_prefix + "wo.weight", ours + "wo/kernel", Dense()),
  )


def encoder_layer(hf_ffn: str, ours: str = "encoder/blocks/layers_{i}/",
                  hf: str = "encoder.block.{i}.layer.") -> tuple[Rule, ...]:
  """An encoder layer of a T5-layout checkpoint whose dense FFN sits under `layer.1.{hf_ffn}.`
  (T5: DenseReluDense, Switch: mlp); `ours` is our layer's path."""
  return (
      *_attention(hf + "0.SelfAttention.", ours + "attn/"),
      Rule(hf + "0.layer_norm.weight", ours + "attn_norm/scale"),
      *_ffn(hf + f"1.{hf_ffn}.", ours + "mlp/"),
      Rule(hf + "1.layer_norm.weight", ours + "mlp_norm/scale"),
  )


def decoder_layer(hf_ffn: str, ours: str = "decoder/blocks/layers_{i}/",
                  hf: str = "decoder.block.{i}.layer.") -> tuple[Rule, ...]:
  """A decoder layer: self-attention, cross-attention (EncDecAttention), FFN under layer.2."""
  return (
      *_attention(hf + "0.SelfAttention.", ours + "attn/"),
      Rule(hf + "0.layer_norm.weight", ours + "attn_norm/scale"),
      *_attention(hf + "1.EncDecAttention.", ours + "cross_attn/"),
      Rule(hf + "1.layer_norm.weight", ours + "cross_norm/scale"),
      *_ffn(hf + f"2.{hf_ffn}.", ours + "mlp/"),
      Rule(hf + "2.layer_norm.weight", ours + "mlp_norm/scale"),
  )


SHARED = (
    Rule("shared.weight", "embed/tokens/embedding"),
    Rule("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         "encoder/rel_bias/embedding"),
    Rule("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         "decoder/rel_bias/embedding"),
    Rule("encoder.final_layer_norm.weight", "encoder/final_norm/scale"),
    Rule("decoder.final_layer_norm.weight", "decoder/final_norm/scale"),
    Rule("lm_head.weight", "lm_head/kernel", Dense()),
)

TENSORS = SHARED + encoder_layer("DenseReluDense") + decoder_layer("DenseReluDense")

# Tied copies of `shared.weight` that some checkpoints also store, and a cross-attention bias
# table that old checkpoints carry but no layer reads.
IGNORED = registry.COMMON_IGNORED + (
    r"^(encoder|decoder)\.embed_tokens\.weight$",
    r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$",
)

# The T5Config defaults of the keys read below (config.json omits default values).
DEFAULTS = dict(
    vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=None,
    num_heads=8, relative_attention_num_buckets=32, relative_attention_max_distance=128,
    dropout_rate=0.1, layer_norm_epsilon=1e-6, feed_forward_proj="relu",
    tie_word_embeddings=True, n_positions=512,
)


def activation_from_hf(hf: HFConfig) -> str:
  """`feed_forward_proj` is 'ACT' or 'gated-ACT'; transformers runs 'gated-gelu' as gelu_new."""
  proj = hf["feed_forward_proj"]
  parts = proj.split("-")
  gated = parts[0] == "gated" and len(parts) == 2
  name = "gelu_new" if proj == "gated-gelu" else parts[-1]
  table = config_maps.GATED_ACTIVATIONS if gated else config_maps.PLAIN_ACTIVATIONS
  if name not in table or (len(parts) > 1 and not gated):
    raise hf.refuse("feed_forward_proj", proj, "supported: relu, gelu, gelu_new, silu and their "
                    "'gated-' forms")
  return table[name]


def activation_to_hf(cfg: ModelConfig) -> str | None:
  """The feed_forward_proj of cfg.activation, or None where T5 has no spelling for it."""
  if cfg.activation == "geglu":  # 'gated-gelu' means the tanh approximation in transformers
    return None
  name = config_maps.activation_to_hf(cfg)
  if name is None:
    return None
  if not cfg.gated:
    return name
  return "gated-gelu" if cfg.activation == "geglu_tanh" else f"gated-{name}"


def head_fields(hf: HFConfig, tied: bool) -> dict:
  """tie_embeddings and scale_decoder_outputs (None where the scaling follows the tying)."""
  scaled = bool(hf.get("scale_decoder_outputs", hf["tie_word_embeddings"]))
  return dict(tie_embeddings=tied, scale_decoder_outputs=None if scaled == tied else scaled)


def fields_from_checkpoint(values, ckpt) -> dict:
  """The head as transformers 5 loads it: tied to `shared.weight` unless the checkpoint stores
  an `lm_head.weight` of other values (PreTrainedModel.tie_weights), whatever the config says."""
  names = set(ckpt.names())
  tied = "lm_head.weight" not in names or (
      "shared.weight" in names
      and np.array_equal(ckpt.get("lm_head.weight"), ckpt.get("shared.weight")))
  return head_fields(HFConfig(values, DEFAULTS, "t5"), tied)


def common_from_hf(hf: HFConfig) -> dict:
  """ModelConfig fields T5 and Switch Transformers share."""
  d, n, h = hf["d_model"], hf["num_heads"], hf["d_kv"]
  rate = hf["dropout_rate"]
  return dict(
      family="encoder_decoder", vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_layers"],
      n_decoder_layers=hf["num_decoder_layers"] or hf["num_layers"], n_heads=n,
      head_dim=None if h * n == d else h, d_ff=hf["d_ff"], max_seq_len=hf["n_positions"],
      norm="rmsnorm", norm_eps=hf["layer_norm_epsilon"], norm_bias=False, norm_placement="pre",
      position="t5", rel_buckets=hf["relative_attention_num_buckets"],
      rel_max_distance=hf["relative_attention_max_distance"], attn_scale=1.0,
      qkv_bias=False, out_bias=False, mlp_bias=False,
      embed_dropout=rate, attn_dropout=rate, resid_dropout=rate, ffn_dropout=rate,
      embed_init_std=1.0, init_scheme="fan_in",  # T5's initialisation, for further training
  )


def common_to_hf(cfg: ModelConfig) -> dict:
  return dict(
      vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.dim_per_head, d_ff=cfg.ffn_hidden,
      num_layers=cfg.n_layers, num_decoder_layers=cfg.decoder_layers, num_heads=cfg.n_heads,
      relative_attention_num_buckets=cfg.rel_buckets,
      relative_attention_max_distance=cfg.rel_max_distance, dropout_rate=cfg.resid_dropout,
      layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
      scale_decoder_outputs=cfg.decoder_output_scaled, is_encoder_decoder=True,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
  )


def common_unsupported(cfg: ModelConfig) -> list[str]:
  reasons = config_maps.mismatches(
      cfg, family="encoder_decoder", norm="rmsnorm", norm_bias=False, norm_placement="pre",
      has_final_norm=True, position="t5", attn_scale=1.0, qkv_bias=False, out_bias=False,
      mlp_bias=False, embed_norm=False, embed_scale=False, num_kv_heads=cfg.n_heads)
  rates = {f: getattr(cfg, f) for f in ("embed_dropout", "attn_dropout", "resid_dropout",
                                        "ffn_dropout")}
  if len(set(rates.values())) > 1:
    shown = ", ".join(f"{f}={v}" for f, v in rates.items())
    reasons.append(f"{shown} (one HF field, dropout_rate, sets all of them)")
  return reasons


def config_from_hf(values) -> dict:
  hf = HFConfig(values, DEFAULTS, "t5")
  return dict(common_from_hf(hf), **head_fields(hf, tied=bool(hf["tie_word_embeddings"])),
              activation=activation_from_hf(hf))


def config_to_hf(cfg: ModelConfig) -> dict:
  return dict(common_to_hf(cfg), feed_forward_proj=activation_to_hf(cfg))


def unsupported(cfg: ModelConfig) -> list[str]:
  reasons = common_unsupported(cfg)
  if cfg.moe_experts:
    reasons.append(f"moe_experts={cfg.moe_experts} (T5 has dense feed-forward layers)")
  if activation_to_hf(cfg) is None:
    reasons.append(f"activation={cfg.activation!r} (no T5 feed_forward_proj spelling)")
  return reasons


registry.register(registry.Converter(
    model_type="t5", architecture="T5ForConditionalGeneration", base_prefix="",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, unsupported=unsupported,
    tensors=lambda cfg: TENSORS, ignored=IGNORED, fields_from_checkpoint=fields_from_checkpoint,
))
