"""Mixtral (Jiang et al. 2024): Mistral's attention and norms, and in every layer a router over
E SwiGLU experts of which each token uses k, weighted by a softmax over the chosen logits.

Checkpoints store each expert's three matrices separately (see `tensors`); we stack them on a
leading experts axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.config.model import ModelConfig
from research.hf import config_maps, llama, registry
from research.hf.config_maps import HFConfig
from research.hf.tensors import Dense, Rule

_BLOCK = "blocks/layers_{i}/"
_HF = "model.layers.{i}."


@dataclasses.dataclass(frozen=True)
class Experts:
  """E per-expert torch Linear weights [out, in] <-> our stacked kernel [E, in, out]."""

  def hf_shapes(self, ours):
    e, n_in, n_out = ours[0]
    return [(n_out, n_in)] * e

  def to_ours(self, hf, ours):
    return [np.stack([w.T for w in hf])]

  def to_hf(self, ours):
    return [w.T for w in ours[0]]


_DENSE_FFN = tuple(_HF + n for n in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
_ATTENTION_AND_NORMS = tuple(r for r in llama.TENSORS if not r.hf[0].startswith(_DENSE_FFN))


def tensors(cfg: ModelConfig) -> tuple[Rule, ...]:
  """The on-disk layout of published Mixtral checkpoints (transformers 5 fuses the experts in
  memory but still reads and writes this): per expert, w1 the gate, w3 the up and w2 the down
  projection; the router is `block_sparse_moe.gate`."""
  moe = _HF + "block_sparse_moe."
  experts = lambda w: tuple(f"{moe}experts.{e}.{w}.weight" for e in range(cfg.moe_experts))  # noqa: E731
  return _ATTENTION_AND_NORMS + (
      Rule(moe + "gate.weight", _BLOCK + "moe/router/kernel", Dense()),
      Rule(experts("w1"), _BLOCK + "moe/wi_gate/kernel", Experts()),
      Rule(experts("w3"), _BLOCK + "moe/wi_up/kernel", Experts()),
      Rule(experts("w2"), _BLOCK + "moe/wo/kernel", Experts()),
  )


_DEFAULTS = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
    max_position_embeddings=4096 * 32, initializer_range=0.02, rms_norm_eps=1e-5,
    tie_word_embeddings=False, sliding_window=None, attention_dropout=0.0,
    num_experts_per_tok=2, num_local_experts=8, router_aux_loss_coef=0.001, router_jitter_noise=0.0,
)


def config_from_hf(values) -> dict:
  hf = HFConfig(values, _DEFAULTS, "mixtral")
  if hf["router_jitter_noise"]:
    raise hf.refuse("router_jitter_noise", hf["router_jitter_noise"], "router noise is not implemented")
  d, n, k = hf["hidden_size"], hf["num_attention_heads"], hf["num_experts_per_tok"]
  head_dim = hf["head_dim"]
  return dict(
      vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"], n_heads=n,
      n_kv_heads=hf["num_key_value_heads"] or n,
      head_dim=None if head_dim in (None, d // n) else head_dim,
      d_ff=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
      norm="rmsnorm", norm_eps=hf["rms_norm_eps"], norm_bias=False, norm_placement="pre",
      activation=config_maps.activation_from_hf(hf, "hidden_act", gated=True),
      **config_maps.rope_from_hf(hf), sliding_window=hf["sliding_window"],
      tie_embeddings=hf["tie_word_embeddings"], attn_dropout=hf["attention_dropout"],
      init_std=hf["initializer_range"],
      moe_experts=hf["num_local_experts"], moe_top_k=k, moe_every=1, moe_softmax_after_topk=True,
      moe_dropless=True, moe_z_weight=0.0,
      # transformers pools one loss over all layers with f summing to k; ours is summed over
      # layers with f summing to 1 (see research.presets.mixtral_8x7b).
      moe_aux_weight=hf["router_aux_loss_coef"] * k / hf["num_hidden_layers"],
  )


def config_to_hf(cfg: ModelConfig) -> dict:
  return dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.expert_hidden,
      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.dim_per_head,
      hidden_act=config_maps.activation_to_hf(cfg), max_position_embeddings=cfg.max_seq_len,
      rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
      sliding_window=cfg.sliding_window, attention_dropout=cfg.attn_dropout,
      initializer_range=cfg.init_std, num_local_experts=cfg.moe_experts,
      num_experts_per_tok=cfg.moe_top_k,
      router_aux_loss_coef=cfg.moe_aux_weight * cfg.n_layers / cfg.moe_top_k,
      **config_maps.rope_to_hf(cfg),
  )


def unsupported(cfg: ModelConfig) -> list[str]:
  reasons = config_maps.decoder_mismatches(cfg, moe=True) + config_maps.mismatches(
      cfg, norm="rmsnorm", norm_bias=False, gated=True, position="rope", rope_fraction=1.0,
      parallel_block=False, embed_norm=False, attn_scale=None, qkv_bias=False, out_bias=False,
      mlp_bias=False, moe_every=1, moe_softmax_after_topk=True)
  if not cfg.moe_dropless:
    reasons.append("moe_dropless=False (Mixtral drops no tokens; capacity routing differs)")
  return reasons


registry.register(registry.Converter(
    model_type="mixtral", architecture="MixtralForCausalLM", base_prefix="model.",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, unsupported=unsupported,
    tensors=tensors,
))
