"""GPT-2: learned positions, pre-LayerNorm, tanh-GELU MLP, fused qkv in `Conv1D` layers.

GPT-2's `Conv1D` stores weights [in, out] (transposed against `nn.Linear`), and `c_attn`
holds query, key and value side by side along its output: [q | k | v], each d_model wide.
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import config_maps, registry
from research.hf.config_maps import HFConfig
from research.hf.tensors import Conv1D, Dense, FusedQKV, Rule

_BLOCK = "blocks/layers_{i}/"
_HF = "transformer.h.{i}."
_QKV = tuple(_BLOCK + f"attn/{x}/" for x in "qkv")

TENSORS = (
    Rule("transformer.wte.weight", "embed/tokens/embedding"),
    Rule("transformer.wpe.weight", "embed/positions/embedding"),
    Rule(_HF + "ln_1.weight", _BLOCK + "attn_norm/scale"),
    Rule(_HF + "ln_1.bias", _BLOCK + "attn_norm/bias"),
    Rule(_HF + "attn.c_attn.weight", [p + "kernel" for p in _QKV], FusedQKV("concat", "conv1d")),
    Rule(_HF + "attn.c_attn.bias", [p + "bias" for p in _QKV], FusedQKV("concat", "bias")),
    Rule(_HF + "attn.c_proj.weight", _BLOCK + "attn/o/kernel", Conv1D(in_dims=2)),
    Rule(_HF + "attn.c_proj.bias", _BLOCK + "attn/o/bias"),
    Rule(_HF + "ln_2.weight", _BLOCK + "mlp_norm/scale"),
    Rule(_HF + "ln_2.bias", _BLOCK + "mlp_norm/bias"),
    Rule(_HF + "mlp.c_fc.weight", _BLOCK + "mlp/wi/kernel", Conv1D()),
    Rule(_HF + "mlp.c_fc.bias", _BLOCK + "mlp/wi/bias"),
    Rule(_HF + "mlp.c_proj.weight", _BLOCK + "mlp/wo/kernel", Conv1D()),
    Rule(_HF + "mlp.c_proj.bias", _BLOCK + "mlp/wo/bias"),
    Rule("transformer.ln_f.weight", "final_norm/scale"),
    Rule("transformer.ln_f.bias", "final_norm/bias"),
    Rule("lm_head.weight", "lm_head/kernel", Dense()),
)

_DEFAULTS = dict(
    vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
    activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
    layer_norm_epsilon=1e-5, initializer_range=0.02, scale_attn_weights=True,
    scale_attn_by_inverse_layer_idx=False, add_cross_attention=False, tie_word_embeddings=True,
)


def config_from_hf(values) -> dict:
  hf = HFConfig(values, _DEFAULTS, "gpt2")
  hf.require("scale_attn_by_inverse_layer_idx", (False,))
  hf.require("add_cross_attention", (False,))
  d = hf["n_embd"]
  return dict(
      vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["n_layer"], n_heads=hf["n_head"],
      d_ff=hf["n_inner"] or 4 * d, max_seq_len=hf["n_positions"],
      norm="layernorm", norm_bias=True, norm_eps=hf["layer_norm_epsilon"], norm_placement="pre",
      activation=config_maps.activation_from_hf(hf, "activation_function", gated=False),
      position="learned", qkv_bias=True, out_bias=True, mlp_bias=True,
      attn_scale=None if hf["scale_attn_weights"] else 1.0,
      tie_embeddings=hf["tie_word_embeddings"], embed_dropout=hf["embd_pdrop"],
      attn_dropout=hf["attn_pdrop"], resid_dropout=hf["resid_pdrop"],
      init_std=hf["initializer_range"],
      # GPT-2's init scales the residual-output projections by 1/sqrt(2 n_layers).
      scale_residual_init=True,
  )


def config_to_hf(cfg: ModelConfig) -> dict:
  return dict(
      vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model,
      n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.ffn_hidden,
      activation_function=config_maps.activation_to_hf(cfg),
      layer_norm_epsilon=cfg.norm_eps, scale_attn_weights=cfg.attn_scale is None,
      tie_word_embeddings=cfg.tie_embeddings, embd_pdrop=cfg.embed_dropout,
      attn_pdrop=cfg.attn_dropout, resid_pdrop=cfg.resid_dropout, initializer_range=cfg.init_std,
  )


def unsupported(cfg: ModelConfig) -> list[str]:
  return (config_maps.decoder_mismatches(cfg) + config_maps.derived_head_dim(cfg)
          + config_maps.mismatches(
              cfg, norm="layernorm", norm_bias=True, gated=False, position="learned",
              parallel_block=False, embed_norm=False, qkv_bias=True, out_bias=True, mlp_bias=True,
              attn_scale=(None, 1.0), sliding_window=None, num_kv_heads=cfg.n_heads))


registry.register(registry.Converter(
    model_type="gpt2", architecture="GPT2LMHeadModel", base_prefix="transformer.",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, unsupported=unsupported,
    tensors=lambda cfg: TENSORS,
    # Old GPT-2 checkpoints store each layer's causal-mask buffer as attn.bias.
    ignored=registry.COMMON_IGNORED + (r"\.attn\.bias$",),
))
