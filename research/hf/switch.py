"""Switch Transformers (Fedus et al. 2021): T5 whose every k-th FFN is a top-1 mixture of experts.

transformers' SwitchTransformersForConditionalGeneration makes layer i sparse when
i % k == 1, k = num_layers // num_sparse_*_layers; our stacks make the last layer of each group
of `moe_every` sparse, so the two agree for k = 1 and k = 2 (switch-base-*: k = 2). Each expert
takes at most `expert_capacity` tokens per sequence, in sequence order (`moe_expert_capacity`,
priority 'token'), and a dropped token gets no FFN output; transformers also lets padding
claim capacity, which matters only when padding precedes real tokens and an expert fills up.
The router's training-time input jitter (`router_jitter_noise`) is not implemented: loading
keeps the eval-mode function exactly and ignores it; saving writes 0.
"""

from __future__ import annotations

from research.config.model import ModelConfig
from research.hf import config_maps, registry, t5
from research.hf.config_maps import HFConfig
from research.hf.mixtral import Experts
from research.hf.tensors import Dense, Rule

DEFAULTS = dict(
    t5.DEFAULTS, d_model=768, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12,
    expert_capacity=64, num_sparse_encoder_layers=3, num_sparse_decoder_layers=3, num_experts=8,
    router_bias=False, router_jitter_noise=0.01, router_dtype="float32",
    router_z_loss_coef=0.001, router_aux_loss_coef=0.001, dense_act_fn="relu",
)


def _layer(stack: str, i: int, every: int) -> str:
  if every == 1:
    return f"{stack}/blocks/layers_{i}/"
  return f"{stack}/blocks/layers_{i // every}/block_{i % every}/"


def _sparse_ffn(hf: str, ours: str, experts: int) -> tuple[Rule, ...]:
  names = lambda w: tuple(f"{hf}mlp.experts.expert_{e}.{w}.weight" for e in range(experts))  # noqa: E731
  return (
      Rule(hf + "mlp.router.classifier.weight", ours + "moe/router/kernel", Dense()),
      Rule(names("wi"), ours + "moe/wi/kernel", Experts()),
      Rule(names("wo"), ours + "moe/wo/kernel", Experts()),
  )


def tensors(cfg: ModelConfig) -> list[Rule]:
  """Concrete per-layer rules (dense and sparse layers alternate, in groups of moe_every)."""
  every = cfg.moe_every if cfg.moe_experts else 1
  rules = list(t5.SHARED)
  for stack, layers, make, ffn_sublayer in (
      ("encoder", cfg.n_layers, t5.encoder_layer, 1),
      ("decoder", cfg.decoder_layers, t5.decoder_layer, 2)):
    for i in range(layers):
      ours, hf = _layer(stack, i, every), f"{stack}.block.{i}.layer."
      rules += make("mlp", ours, hf)
      rules += _sparse_ffn(f"{hf}{ffn_sublayer}.", ours, cfg.moe_experts)
  return rules


def _sparse_step(hf: HFConfig, layers_key: str, sparse_key: str) -> int:
  sparse = hf[sparse_key]
  if sparse <= 0:
    raise hf.refuse(sparse_key, sparse, "a Switch model without sparse layers (load it as t5)")
  step = hf[layers_key] // sparse
  if step not in (1, 2) or hf[layers_key] % step:
    raise hf.refuse(sparse_key, sparse, f"gives sparse layers i % {step} == 1 of "
                    f"{hf[layers_key]}; research stacks express every layer or every other one")
  return step


def config_from_hf(values) -> dict:
  hf = HFConfig(values, DEFAULTS, "switch_transformers")
  hf.require("router_bias", (False,))
  hf.require("router_dtype", ("float32",))
  # transformers ties and rescales exactly when tie_word_embeddings (scale_decoder_outputs is
  # T5's alone).
  fields = dict(t5.common_from_hf(hf), tie_embeddings=bool(hf["tie_word_embeddings"]))
  step = _sparse_step(hf, "num_layers", "num_sparse_encoder_layers")
  decoder_step = _sparse_step(hf, "num_decoder_layers", "num_sparse_decoder_layers")
  if decoder_step != step:
    raise hf.refuse("num_sparse_decoder_layers", hf["num_sparse_decoder_layers"],
                    f"the decoder's sparse step {decoder_step} differs from the encoder's {step}")
  per_stack = hf["num_layers"] // step
  return dict(
      fields, activation=config_maps.activation_from_hf(hf, "dense_act_fn", gated=False),
      moe_experts=hf["num_experts"], moe_top_k=1, moe_every=step, moe_softmax_after_topk=False,
      moe_expert_capacity=hf["expert_capacity"], moe_dropless=False, moe_priority="token",
      # transformers pools each stack's MoE layers into one loss; ours are per layer, summed.
      moe_aux_weight=hf["router_aux_loss_coef"] / per_stack,
      moe_z_weight=hf["router_z_loss_coef"] / per_stack,
  )


def config_to_hf(cfg: ModelConfig) -> dict:
  out = t5.common_to_hf(cfg)
  del out["scale_decoder_outputs"]  # Switch ties and rescales by tie_word_embeddings alone
  per_stack = cfg.n_layers // cfg.moe_every
  return dict(
      out, dense_act_fn=config_maps.activation_to_hf(cfg), num_experts=cfg.moe_experts,
      expert_capacity=cfg.moe_expert_capacity, num_sparse_encoder_layers=per_stack,
      num_sparse_decoder_layers=cfg.decoder_layers // cfg.moe_every, router_bias=False,
      router_jitter_noise=0.0, router_dtype="float32",
      router_aux_loss_coef=cfg.moe_aux_weight * per_stack,
      router_z_loss_coef=cfg.moe_z_weight * per_stack,
  )


def unsupported(cfg: ModelConfig) -> list[str]:
  # Switch scales the decoder output exactly when it ties the head.
  reasons = t5.common_unsupported(cfg) + config_maps.mismatches(
      cfg, scale_decoder_outputs=(None, cfg.tie_embeddings))
  if not cfg.moe_experts:
    return reasons + ["moe_experts=0 (a dense model; switch_transformers has sparse layers)"]
  reasons += config_maps.mismatches(
      cfg, gated=False, moe_top_k=1, moe_every=(1, 2), moe_softmax_after_topk=False,
      moe_dropless=False, moe_priority="token", moe_d_ff=None)
  if cfg.moe_expert_capacity is None:
    reasons.append("moe_expert_capacity=None (switch_transformers has a fixed expert_capacity)")
  if config_maps.activation_to_hf(cfg) is None:
    reasons.append(f"activation={cfg.activation!r} (no HF activation name)")
  return reasons


registry.register(registry.Converter(
    model_type="switch_transformers", architecture="SwitchTransformersForConditionalGeneration",
    base_prefix="", config_from_hf=config_from_hf, config_to_hf=config_to_hf,
    unsupported=unsupported, tensors=tensors, ignored=t5.IGNORED,
))
