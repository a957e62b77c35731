"""BLOOM: ALiBi, a LayerNorm on the token embeddings, pre-LayerNorm blocks with biases.

`query_key_value` is laid out per head, [N, 3, H], like GPT-NeoX. BLOOM builds its ALiBi
positions from the attention mask (cumsum - 1), as our default positions do, and adds the
bias unscaled next to the scaled scores, as ours does.
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import config_maps, registry
from research.hf.config_maps import HFConfig
from research.hf.tensors import Dense, FusedQKV, Rule

_BLOCK = "blocks/layers_{i}/"
_HF = "transformer.h.{i}."
_QKV = tuple(_BLOCK + f"attn/{x}/" for x in "qkv")

TENSORS = (
    Rule("transformer.word_embeddings.weight", "embed/tokens/embedding"),
    Rule("transformer.word_embeddings_layernorm.weight", "embed/norm/scale"),
    Rule("transformer.word_embeddings_layernorm.bias", "embed/norm/bias"),
    Rule(_HF + "input_layernorm.weight", _BLOCK + "attn_norm/scale"),
    Rule(_HF + "input_layernorm.bias", _BLOCK + "attn_norm/bias"),
    Rule(_HF + "self_attention.query_key_value.weight", [p + "kernel" for p in _QKV],
         FusedQKV("grouped", "dense")),
    Rule(_HF + "self_attention.query_key_value.bias", [p + "bias" for p in _QKV],
         FusedQKV("grouped", "bias")),
    Rule(_HF + "self_attention.dense.weight", _BLOCK + "attn/o/kernel", Dense(in_dims=2)),
    Rule(_HF + "self_attention.dense.bias", _BLOCK + "attn/o/bias"),
    Rule(_HF + "post_attention_layernorm.weight", _BLOCK + "mlp_norm/scale"),
    Rule(_HF + "post_attention_layernorm.bias", _BLOCK + "mlp_norm/bias"),
    Rule(_HF + "mlp.dense_h_to_4h.weight", _BLOCK + "mlp/wi/kernel", Dense()),
    Rule(_HF + "mlp.dense_h_to_4h.bias", _BLOCK + "mlp/wi/bias"),
    Rule(_HF + "mlp.dense_4h_to_h.weight", _BLOCK + "mlp/wo/kernel", Dense()),
    Rule(_HF + "mlp.dense_4h_to_h.bias", _BLOCK + "mlp/wo/bias"),
    Rule("transformer.ln_f.weight", "final_norm/scale"),
    Rule("transformer.ln_f.bias", "final_norm/bias"),
    Rule("lm_head.weight", "lm_head/kernel", Dense()),
)

_DEFAULTS = dict(
    vocab_size=250880, hidden_size=64, n_layer=2, n_head=8, layer_norm_epsilon=1e-5,
    initializer_range=0.02, apply_residual_connection_post_layernorm=False,
    hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=True,
    # Not a BloomConfig field: ALiBi has no maximum length, but BigScience's configs carry
    # their training length as seq_length, which we keep as max_seq_len.
    seq_length=2048,
)


def config_from_hf(values) -> dict:
  hf = HFConfig(values, _DEFAULTS, "bloom")
  hf.require("apply_residual_connection_post_layernorm", (False,))
  d = hf.first("hidden_size", "n_embed")
  return dict(
      vocab_size=hf["vocab_size"], d_model=d, n_layers=hf.first("n_layer", "num_hidden_layers"),
      n_heads=hf.first("n_head", "num_attention_heads"), d_ff=4 * d, max_seq_len=hf["seq_length"],
      norm="layernorm", norm_bias=True, norm_eps=hf["layer_norm_epsilon"], norm_placement="pre",
      embed_norm=True, activation="gelu_tanh", position="alibi", qkv_bias=True, out_bias=True,
      mlp_bias=True, tie_embeddings=hf["tie_word_embeddings"],
      attn_dropout=hf["attention_dropout"], resid_dropout=hf["hidden_dropout"],
      init_std=hf["initializer_range"],
  )


def config_to_hf(cfg: ModelConfig) -> dict:
  return dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, n_layer=cfg.n_layers,
      n_head=cfg.n_heads, layer_norm_epsilon=cfg.norm_eps, seq_length=cfg.max_seq_len,
      tie_word_embeddings=cfg.tie_embeddings, attention_dropout=cfg.attn_dropout,
      hidden_dropout=cfg.resid_dropout, initializer_range=cfg.init_std,
  )


def unsupported(cfg: ModelConfig) -> list[str]:
  reasons = config_maps.decoder_mismatches(cfg) + config_maps.derived_head_dim(cfg)
  reasons += config_maps.mismatches(
      cfg, norm="layernorm", norm_bias=True, embed_norm=True, activation="gelu_tanh",
      position="alibi", parallel_block=False, qkv_bias=True, out_bias=True, mlp_bias=True,
      attn_scale=None, sliding_window=None, num_kv_heads=cfg.n_heads,
      ffn_hidden=4 * cfg.d_model)
  return reasons


registry.register(registry.Converter(
    model_type="bloom", architecture="BloomForCausalLM", base_prefix="transformer.",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, unsupported=unsupported,
    tensors=lambda cfg: TENSORS,
))
