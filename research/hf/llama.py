"""LLaMA, Mistral and Qwen2: pre-RMSNorm, SwiGLU, RoPE, separate q/k/v projections.

The three differ only in config: Mistral adds a sliding window; Qwen2 has q/k/v biases (no
output bias) and a per-layer choice of sliding window; LLaMA's `attention_bias` covers q, k, v
and the output projection. transformers' rotate_half RoPE is ours, so q/k need no permutation.
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import config_maps, registry
from research.hf.config_maps import HFConfig
from research.hf.tensors import Dense, Flat, Rule

_BLOCK = "blocks/layers_{i}/"
_HF = "model.layers.{i}."

TENSORS = (
    Rule("model.embed_tokens.weight", "embed/tokens/embedding"),
    Rule(_HF + "input_layernorm.weight", _BLOCK + "attn_norm/scale"),
    Rule(_HF + "self_attn.q_proj.weight", _BLOCK + "attn/q/kernel", Dense()),
    Rule(_HF + "self_attn.k_proj.weight", _BLOCK + "attn/k/kernel", Dense()),
    Rule(_HF + "self_attn.v_proj.weight", _BLOCK + "attn/v/kernel", Dense()),
    Rule(_HF + "self_attn.q_proj.bias", _BLOCK + "attn/q/bias", Flat()),
    Rule(_HF + "self_attn.k_proj.bias", _BLOCK + "attn/k/bias", Flat()),
    Rule(_HF + "self_attn.v_proj.bias", _BLOCK + "attn/v/bias", Flat()),
    Rule(_HF + "self_attn.o_proj.weight", _BLOCK + "attn/o/kernel", Dense(in_dims=2)),
    Rule(_HF + "self_attn.o_proj.bias", _BLOCK + "attn/o/bias"),
    Rule(_HF + "post_attention_layernorm.weight", _BLOCK + "mlp_norm/scale"),
    Rule(_HF + "mlp.gate_proj.weight", _BLOCK + "mlp/wi_gate/kernel", Dense()),
    Rule(_HF + "mlp.up_proj.weight", _BLOCK + "mlp/wi_up/kernel", Dense()),
    Rule(_HF + "mlp.down_proj.weight", _BLOCK + "mlp/wo/kernel", Dense()),
    Rule(_HF + "mlp.gate_proj.bias", _BLOCK + "mlp/wi_gate/bias"),
    Rule(_HF + "mlp.up_proj.bias", _BLOCK + "mlp/wi_up/bias"),
    Rule(_HF + "mlp.down_proj.bias", _BLOCK + "mlp/wo/bias"),
    Rule("model.norm.weight", "final_norm/scale"),
    Rule("lm_head.weight", "lm_head/kernel", Dense()),
)

# The transformers class defaults of the keys read below (config.json omits default values).
_DEFAULTS = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
    max_position_embeddings=2048, initializer_range=0.02, rms_norm_eps=1e-6,
    tie_word_embeddings=False, attention_bias=False, mlp_bias=False, attention_dropout=0.0,
)
_TYPE_DEFAULTS = {
    "llama": {},
    "mistral": dict(intermediate_size=14336, num_key_value_heads=8,
                    max_position_embeddings=4096 * 32, sliding_window=4096),
    "qwen2": dict(vocab_size=151936, intermediate_size=22016, num_key_value_heads=32,
                  max_position_embeddings=32768, use_sliding_window=False, sliding_window=4096,
                  max_window_layers=28, layer_types=None),
}
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM"}


def _sliding_window(hf: HFConfig, n_layers: int) -> int | None:
  if hf.model_type == "llama":
    return None
  if hf.model_type == "mistral":
    return hf["sliding_window"]
  # Qwen2 chooses per layer; we can express all layers or none.
  window = hf["sliding_window"] if hf["use_sliding_window"] else None
  types = hf["layer_types"] or [
      "sliding_attention" if window is not None and i >= hf["max_window_layers"]
      else "full_attention" for i in range(n_layers)]
  if set(types) == {"full_attention"}:
    return None
  if set(types) == {"sliding_attention"} and window is not None:
    return window
  raise hf.refuse("layer_types", types, "a sliding window on some layers only cannot be expressed")


def config_from_hf(values, model_type: str) -> dict:
  hf = HFConfig(values, {**_DEFAULTS, **_TYPE_DEFAULTS[model_type]}, model_type)
  d, n = hf["hidden_size"], hf["num_attention_heads"]
  head_dim = hf["head_dim"]
  rope = config_maps.rope_from_hf(hf)
  if rope["rope_fraction"] != 1.0:
    raise hf.refuse(
        "partial_rotary_factor", rope["rope_fraction"], f"{model_type} rotates whole heads")
  bias = {"llama": hf["attention_bias"], "mistral": False, "qwen2": True}[model_type]
  return dict(
      vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"], n_heads=n,
      n_kv_heads=hf["num_key_value_heads"] or n,
      head_dim=None if head_dim in (None, d // n) else head_dim,
      d_ff=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
      norm="rmsnorm", norm_eps=hf["rms_norm_eps"], norm_bias=False, norm_placement="pre",
      activation=config_maps.activation_from_hf(hf, "hidden_act", gated=True),
      **rope, qkv_bias=bias, out_bias=bias and model_type == "llama",
      mlp_bias=model_type == "llama" and hf["mlp_bias"],
      sliding_window=_sliding_window(hf, hf["num_hidden_layers"]),
      tie_embeddings=hf["tie_word_embeddings"], attn_dropout=hf["attention_dropout"],
      init_std=hf["initializer_range"],
  )


def config_to_hf(cfg: ModelConfig, model_type: str) -> dict:
  out = dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.dim_per_head,
      hidden_act=config_maps.activation_to_hf(cfg), max_position_embeddings=cfg.max_seq_len,
      rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
      attention_dropout=cfg.attn_dropout, initializer_range=cfg.init_std,
      **config_maps.rope_to_hf(cfg),
  )
  if model_type == "llama":
    out.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
  elif model_type == "mistral":
    out.update(sliding_window=cfg.sliding_window)
  else:
    sliding = cfg.sliding_window is not None
    out.update(use_sliding_window=sliding, sliding_window=cfg.sliding_window, max_window_layers=0,
               layer_types=["sliding_attention" if sliding else "full_attention"] * cfg.n_layers)
  return out


def unsupported(cfg: ModelConfig, model_type: str) -> list[str]:
  reasons = config_maps.decoder_mismatches(cfg) + config_maps.mismatches(
      cfg, norm="rmsnorm", norm_bias=False, gated=True, position="rope", rope_fraction=1.0,
      parallel_block=False, embed_norm=False, attn_scale=None)
  if model_type == "llama":
    reasons += config_maps.mismatches(cfg, sliding_window=None)
    reasons += config_maps.one_flag(cfg, "attention_bias", "qkv_bias", "out_bias")
  elif model_type == "mistral":
    reasons += config_maps.mismatches(cfg, qkv_bias=False, out_bias=False, mlp_bias=False)
  else:
    reasons += config_maps.mismatches(cfg, qkv_bias=True, out_bias=False, mlp_bias=False)
  return reasons


for _type in ("llama", "mistral", "qwen2"):
  registry.register(registry.Converter(
      model_type=_type, architecture=_ARCHITECTURES[_type], base_prefix="model.",
      config_from_hf=lambda values, t=_type: config_from_hf(values, t),
      config_to_hf=lambda cfg, t=_type: config_to_hf(cfg, t),
      unsupported=lambda cfg, t=_type: unsupported(cfg, t),
      tensors=lambda cfg: TENSORS,
  ))
