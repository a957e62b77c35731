"""Falcon: parallel attention + MLP, multi-query or grouped-query, one fused qkv projection.

Two architectures share the code in transformers:
  - Falcon-7B style (`new_decoder_architecture=false`): one LayerNorm feeds both branches
    (`parallel_attn`; serial with a second norm otherwise); multi-query (`multi_query`) or
    multi-head attention.
  - Falcon-40B/180B style (`new_decoder_architecture=true`): grouped kv heads and, by
    default, separate norms `ln_attn` / `ln_mlp` for the two branches.
In every case `query_key_value`'s output is grouped per kv head: [K, G + 2, H], each kv head's G
query heads, then its key, then its value (multi-query: K = 1; multi-head: G = 1).
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import config_maps, registry
from research.hf.config_maps import HFConfig
from research.hf.tensors import Dense, FusedQKV, Rule

_BLOCK = "blocks/layers_{i}/"
_HF = "transformer.h.{i}."
_QKV = tuple(_BLOCK + f"attn/{x}/" for x in "qkv")


def tensors(cfg: ModelConfig) -> list[Rule]:
  # The new architecture's two parallel norms have their own names.
  if cfg.parallel_block and cfg.parallel_norms == 2:
    attn_norm, mlp_norm = "ln_attn", "ln_mlp"
  else:
    attn_norm, mlp_norm = "input_layernorm", "post_attention_layernorm"
  return [
      Rule("transformer.word_embeddings.weight", "embed/tokens/embedding"),
      Rule(_HF + attn_norm + ".weight", _BLOCK + "attn_norm/scale"),
      Rule(_HF + attn_norm + ".bias", _BLOCK + "attn_norm/bias"),
      Rule(_HF + "self_attention.query_key_value.weight", [p + "kernel" for p in _QKV],
           FusedQKV("grouped", "dense")),
      Rule(_HF + "self_attention.query_key_value.bias", [p + "bias" for p in _QKV],
           FusedQKV("grouped", "bias")),
      Rule(_HF + "self_attention.dense.weight", _BLOCK + "attn/o/kernel", Dense(in_dims=2)),
      Rule(_HF + "self_attention.dense.bias", _BLOCK + "attn/o/bias"),
      Rule(_HF + mlp_norm + ".weight", _BLOCK + "mlp_norm/scale"),
      Rule(_HF + mlp_norm + ".bias", _BLOCK + "mlp_norm/bias"),
      Rule(_HF + "mlp.dense_h_to_4h.weight", _BLOCK + "mlp/wi/kernel", Dense()),
      Rule(_HF + "mlp.dense_h_to_4h.bias", _BLOCK + "mlp/wi/bias"),
      Rule(_HF + "mlp.dense_4h_to_h.weight", _BLOCK + "mlp/wo/kernel", Dense()),
      Rule(_HF + "mlp.dense_4h_to_h.bias", _BLOCK + "mlp/wo/bias"),
      Rule("transformer.ln_f.weight", "final_norm/scale"),
      Rule("transformer.ln_f.bias", "final_norm/bias"),
      Rule("lm_head.weight", "lm_head/kernel", Dense()),
  ]


_DEFAULTS = dict(
    vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
    num_ln_in_parallel_attn=None, layer_norm_epsilon=1e-5, initializer_range=0.02,
    hidden_dropout=0.0, attention_dropout=0.0, num_kv_heads=None, alibi=False,
    new_decoder_architecture=False, multi_query=True, parallel_attn=True, bias=False,
    max_position_embeddings=2048, ffn_hidden_size=None, activation="gelu",
    tie_word_embeddings=True,
)


def _attention_layout(hf: HFConfig, n: int) -> dict:
  """kv heads and block layout from the architecture flags, as FalconDecoderLayer reads them."""
  if hf["new_decoder_architecture"]:
    if not hf["parallel_attn"]:
      # transformers builds ln_attn/ln_mlp only for parallel layers; a serial one cannot run.
      raise hf.refuse("parallel_attn", False, "the new decoder architecture is parallel only")
    norms = hf["num_ln_in_parallel_attn"] or 2
    if norms not in (1, 2):
      raise hf.refuse("num_ln_in_parallel_attn", norms, "Falcon has one or two parallel norms")
    return dict(n_kv_heads=hf["num_kv_heads"] or n, parallel_block=True, parallel_norms=norms)
  if hf["num_ln_in_parallel_attn"] not in (None, 1):
    raise hf.refuse("num_ln_in_parallel_attn", hf["num_ln_in_parallel_attn"],
                    "two parallel norms need new_decoder_architecture=true")
  if not hf["multi_query"] and hf["num_kv_heads"] not in (None, n):
    raise hf.refuse("num_kv_heads", hf["num_kv_heads"],
                    "grouped kv heads need new_decoder_architecture=true")
  return dict(n_kv_heads=1 if hf["multi_query"] else n, parallel_block=hf["parallel_attn"],
              parallel_norms=1)


def config_from_hf(values) -> dict:
  hf = HFConfig(values, _DEFAULTS, "falcon")
  if hf["alibi"]:
    # Falcon adds ALiBi before the 1/sqrt(head_dim) scaling and computes it in bfloat16, so
    # its biases differ from ALiBi as research models (and BLOOM) apply it.
    raise hf.refuse("alibi", True, "Falcon's ALiBi variant (scaled with the scores, bfloat16 "
                    "slopes) is not implemented; only rotary Falcon checkpoints load")
  d = hf.first("hidden_size", "n_embed")
  n = hf.first("num_attention_heads", "n_head")
  rope = config_maps.rope_from_hf(hf)
  if rope["rope_fraction"] != 1.0:
    raise hf.refuse("partial_rotary_factor", rope["rope_fraction"], "Falcon rotates whole heads")
  bias = hf["bias"]
  return dict(
      vocab_size=hf["vocab_size"], d_model=d, n_layers=hf.first("num_hidden_layers", "n_layer"),
      n_heads=n, **_attention_layout(hf, n), d_ff=hf["ffn_hidden_size"] or 4 * d,
      max_seq_len=hf["max_position_embeddings"], norm="layernorm", norm_bias=True,
      norm_eps=hf["layer_norm_epsilon"], norm_placement="pre",
      activation=config_maps.activation_from_hf(hf, "activation", gated=False), **rope,
      qkv_bias=bias, out_bias=bias, mlp_bias=bias, tie_embeddings=hf["tie_word_embeddings"],
      attn_dropout=hf["attention_dropout"], resid_dropout=hf["hidden_dropout"],
      init_std=hf["initializer_range"],
  )


def config_to_hf(cfg: ModelConfig) -> dict:
  k, n = cfg.num_kv_heads, cfg.n_heads
  # The 7B layout covers one shared norm with multi-query or multi-head attention; anything
  # else (two norms, grouped kv heads) needs the new architecture.
  new = cfg.parallel_block and (cfg.parallel_norms == 2 or 1 < k < n)
  return dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
      num_attention_heads=n, num_kv_heads=k, new_decoder_architecture=new,
      multi_query=k == 1, parallel_attn=cfg.parallel_block,
      num_ln_in_parallel_attn=cfg.parallel_norms if new else None, alibi=False,
      bias=cfg.qkv_bias, ffn_hidden_size=cfg.ffn_hidden,
      activation=config_maps.activation_to_hf(cfg), layer_norm_epsilon=cfg.norm_eps,
      max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=cfg.tie_embeddings,
      attention_dropout=cfg.attn_dropout, hidden_dropout=cfg.resid_dropout,
      initializer_range=cfg.init_std, **config_maps.rope_to_hf(cfg),
  )


def unsupported(cfg: ModelConfig) -> list[str]:
  reasons = config_maps.decoder_mismatches(cfg) + config_maps.derived_head_dim(cfg)
  reasons += config_maps.mismatches(
      cfg, norm="layernorm", norm_bias=True, gated=False, position="rope", rope_fraction=1.0,
      embed_norm=False, attn_scale=None, sliding_window=None)
  reasons += config_maps.one_flag(cfg, "bias", "qkv_bias", "out_bias", "mlp_bias")
  if not cfg.parallel_block and 1 < cfg.num_kv_heads < cfg.n_heads:
    reasons.append(f"n_kv_heads={cfg.n_kv_heads} with parallel_block=False (grouped kv heads "
                   "come with the parallel new decoder architecture)")
  return reasons


registry.register(registry.Converter(
    model_type="falcon", architecture="FalconForCausalLM", base_prefix="transformer.",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, unsupported=unsupported,
    tensors=tensors,
))
