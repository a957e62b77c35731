"""GPT-NeoX and Pythia: parallel attention + MLP with two LayerNorms, partial rotary.

`query_key_value` is a torch Linear whose output is laid out per head: [N, 3, H] (each head's
query, key and value together). RoPE rotates the first `rotary_pct` of each head's dims with
the rotate_half pairing, as ours does.
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import config_maps, registry
from research.hf.config_maps import HFConfig
from research.hf.tensors import Dense, FusedQKV, Rule

_BLOCK = "blocks/layers_{i}/"
_HF = "gpt_neox.layers.{i}."
_QKV = tuple(_BLOCK + f"attn/{x}/" for x in "qkv")

TENSORS = (
    Rule("gpt_neox.embed_in.weight", "embed/tokens/embedding"),
    Rule(_HF + "input_layernorm.weight", _BLOCK + "attn_norm/scale"),
    Rule(_HF + "input_layernorm.bias", _BLOCK + "attn_norm/bias"),
    Rule(_HF + "attention.query_key_value.weight", [p + "kernel" for p in _QKV],
         FusedQKV("grouped", "dense")),
    Rule(_HF + "attention.query_key_value.bias", [p + "bias" for p in _QKV],
         FusedQKV("grouped", "bias")),
    Rule(_HF + "attention.dense.weight", _BLOCK + "attn/o/kernel", Dense(in_dims=2)),
    Rule(_HF + "attention.dense.bias", _BLOCK + "attn/o/bias"),
    Rule(_HF + "post_attention_layernorm.weight", _BLOCK + "mlp_norm/scale"),
    Rule(_HF + "post_attention_layernorm.bias", _BLOCK + "mlp_norm/bias"),
    Rule(_HF + "mlp.dense_h_to_4h.weight", _BLOCK + "mlp/wi/kernel", Dense()),
    Rule(_HF + "mlp.dense_h_to_4h.bias", _BLOCK + "mlp/wi/bias"),
    Rule(_HF + "mlp.dense_4h_to_h.weight", _BLOCK + "mlp/wo/kernel", Dense()),
    Rule(_HF + "mlp.dense_4h_to_h.bias", _BLOCK + "mlp/wo/bias"),
    Rule("gpt_neox.final_layer_norm.weight", "final_norm/scale"),
    Rule("gpt_neox.final_layer_norm.bias", "final_norm/bias"),
    # transformers 5 names the head lm_head in memory but saves it as embed_out.
    Rule("embed_out.weight", "lm_head/kernel", Dense()),
)

_DEFAULTS = dict(
    vocab_size=50432, hidden_size=6144, num_hidden_layers=44, num_attention_heads=64,
    intermediate_size=24576, hidden_act="gelu", attention_dropout=0.0, hidden_dropout=0.0,
    max_position_embeddings=2048, initializer_range=0.02, layer_norm_eps=1e-5,
    tie_word_embeddings=False, use_parallel_residual=True, attention_bias=True,
)


def config_from_hf(values) -> dict:
  hf = HFConfig(values, _DEFAULTS, "gpt_neox")
  d, n = hf["hidden_size"], hf["num_attention_heads"]
  # Older configs spell RoPE as rotary_emb_base / rotary_pct; transformers' default pct is 0.25.
  rope = config_maps.rope_from_hf(
      hf, theta_key="rotary_emb_base", fraction_key="rotary_pct", default_fraction=0.25)
  config_maps.rope_dims_exact(
      hf, d // n, rope["rope_fraction"], "partial_rotary_factor (rotary_pct)")
  return dict(
      vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"], n_heads=n,
      d_ff=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
      norm="layernorm", norm_bias=True, norm_eps=hf["layer_norm_eps"], norm_placement="pre",
      activation=config_maps.activation_from_hf(hf, "hidden_act", gated=False), **rope,
      qkv_bias=hf["attention_bias"], out_bias=hf["attention_bias"], mlp_bias=True,
      parallel_block=hf["use_parallel_residual"], parallel_norms=2,
      tie_embeddings=hf["tie_word_embeddings"], attn_dropout=hf["attention_dropout"],
      # NeoX applies hidden_dropout to the embeddings and to both sub-layer outputs.
      embed_dropout=hf["hidden_dropout"], resid_dropout=hf["hidden_dropout"],
      init_std=hf["initializer_range"],
  )


def config_to_hf(cfg: ModelConfig) -> dict:
  return dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
      num_attention_heads=cfg.n_heads, intermediate_size=cfg.ffn_hidden,
      hidden_act=config_maps.activation_to_hf(cfg), max_position_embeddings=cfg.max_seq_len,
      layer_norm_eps=cfg.norm_eps, use_parallel_residual=cfg.parallel_block,
      attention_bias=cfg.qkv_bias, tie_word_embeddings=cfg.tie_embeddings,
      attention_dropout=cfg.attn_dropout, hidden_dropout=cfg.resid_dropout,
      initializer_range=cfg.init_std, **config_maps.rope_to_hf(cfg, with_fraction=True),
      # The transformers 4 names of NeoX's rotary settings.
      rotary_pct=cfg.rope_fraction, rotary_emb_base=cfg.rope_theta,
  )


def unsupported(cfg: ModelConfig) -> list[str]:
  reasons = config_maps.decoder_mismatches(cfg) + config_maps.derived_head_dim(cfg)
  reasons += config_maps.mismatches(
      cfg, norm="layernorm", norm_bias=True, gated=False, position="rope", embed_norm=False,
      mlp_bias=True, attn_scale=None, sliding_window=None, num_kv_heads=cfg.n_heads)
  reasons += config_maps.one_flag(cfg, "attention_bias", "qkv_bias", "out_bias")
  if cfg.parallel_block and cfg.parallel_norms != 2:
    reasons.append("parallel_norms=1 (the parallel residual has two norms)")
  if cfg.position == "rope" and cfg.rope_dims != int(cfg.dim_per_head * cfg.rope_fraction):
    reasons.append(f"rope_fraction={cfg.rope_fraction} (rotary dims must be even)")
  return reasons


registry.register(registry.Converter(
    model_type="gpt_neox", architecture="GPTNeoXForCausalLM", base_prefix="gpt_neox.",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, unsupported=unsupported,
    tensors=lambda cfg: TENSORS,
    # Old checkpoints store each layer's causal-mask buffer as attention.bias.
    ignored=registry.COMMON_IGNORED + (r"\.attention\.bias$",),
    aliases={"lm_head.weight": "embed_out.weight"},
))
