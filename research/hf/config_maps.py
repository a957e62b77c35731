"""Config pieces shared by the family converters: HF defaults, RoPE, activations, checks.

HF config.json files omit keys that equal their class defaults, and old files spell RoPE
differently from transformers 5 (`rope_theta` + `rope_scaling` at the top level instead of a
`rope_parameters` dict), so reading goes through `HFConfig` and `rope_from_hf`. Writing
follows what transformers 5's `save_pretrained` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from research.config.model import ModelConfig
from research.hf import errors

ROPE_TYPES = ("default", "linear", "llama3")


class HFConfig:
  """An HF config dict read with its transformers class's defaults for the keys it omits."""

  def __init__(self, values: Mapping[str, Any], defaults: Mapping[str, Any], model_type: str):
    self.values = dict(values)
    self.defaults = dict(defaults)
    self.model_type = model_type

  def __getitem__(self, key: str) -> Any:
    if key in self.values:
      return self.values[key]
    return self.defaults[key]

  def get(self, key: str, default: Any = None) -> Any:
    return self.values.get(key, self.defaults.get(key, default))

  def first(self, *keys: str) -> Any:
    """The first of `keys` present (old configs use other names: n_embed for hidden_size)."""
    for key in keys:
      if key in self.values:
        return self.values[key]
    return self.defaults[keys[0]]

  def refuse(self, field: str, value: Any, why: str) -> errors.ConversionError:
    return errors.config_field(self.model_type, field, value, why)

  def require(self, field: str, allowed: tuple) -> None:
    """Raises unless the field's value (or its default) is one of `allowed`."""
    value = self.get(field)
    if value not in allowed:
      raise self.refuse(field, value, f"research models need {' or '.join(map(repr, allowed))}")


# ------------------------------------------------------------------------------------- RoPE


def rope_from_hf(
    hf: HFConfig, *, theta_key: str = "rope_theta", fraction_key: str = "partial_rotary_factor",
    default_fraction: float = 1.0,
) -> dict[str, Any]:
  """ModelConfig RoPE fields from `rope_parameters` (transformers 5) or the older top-level keys."""
  if hf.values.get("rope_parameters"):
    field, params = "rope_parameters", dict(hf.values["rope_parameters"])
  else:
    field, params = "rope_scaling", dict(hf.values.get("rope_scaling") or {})
  if any(isinstance(v, Mapping) for v in params.values()):
    raise hf.refuse(field, params, "per-layer-type RoPE parameters cannot be expressed")
  type_key = "rope_type" if "rope_type" in params else "type"
  rope_type = params.get(type_key, "default")
  fields = dict(
      position="rope",
      rope_theta=float(params.get("rope_theta", hf.get(theta_key, 10000.0))),
      rope_fraction=float(
          params.get("partial_rotary_factor", hf.get(fraction_key, default_fraction))),
  )
  if rope_type == "linear":
    fields.update(rope_scaling="linear", rope_scaling_factor=float(params["factor"]))
  elif rope_type == "llama3":
    fields.update(
        rope_scaling="llama3", rope_scaling_factor=float(params["factor"]),
        rope_low_freq_factor=float(params["low_freq_factor"]),
        rope_high_freq_factor=float(params["high_freq_factor"]),
        rope_original_max_len=int(
            params.get("original_max_position_embeddings", hf["max_position_embeddings"])))
  elif rope_type != "default":
    raise hf.refuse(
        f"{field}.{type_key}", rope_type, f"supported RoPE types: {', '.join(ROPE_TYPES)}")
  return fields


def rope_to_hf(cfg: ModelConfig, *, with_fraction: bool = False) -> dict[str, Any]:
  """The `rope_parameters` entry transformers 5 writes for `cfg`'s rotary embedding, plus the
  transformers 4 spelling (`rope_theta`, `rope_scaling`), which transformers 5 reads
  consistently and readers pinned to 4.x need: without it they would fall back to theta=1e4."""
  params: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling == "linear":
    params.update(rope_type="linear", factor=cfg.rope_scaling_factor)
  elif cfg.rope_scaling == "llama3":
    params.update(
        rope_type="llama3", factor=cfg.rope_scaling_factor,
        low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
        original_max_position_embeddings=cfg.rope_original_max_len)
  if with_fraction or cfg.rope_fraction != 1.0:
    params["partial_rotary_factor"] = cfg.rope_fraction
  legacy: dict[str, Any] = {"rope_theta": cfg.rope_theta}
  if cfg.rope_scaling != "none":
    legacy["rope_scaling"] = {k: v for k, v in params.items()
                              if k not in ("rope_theta", "partial_rotary_factor")}
  return {"rope_parameters": params, **legacy}


def rope_dims_exact(hf: HFConfig, head_dim: int, fraction: float, field: str) -> None:
  """transformers rotates int(head_dim * fraction) dims; ours rounds that down to even."""
  dims = int(head_dim * fraction)
  if dims % 2 or dims == 0:
    raise hf.refuse(field, fraction, f"gives {dims} rotary dims of head_dim={head_dim}; "
                    "research models rotate an even number > 0")


# ------------------------------------------------------------------------------- activations

# transformers ACT2FN name -> ours, for plain FFNs and for gated (GLU) FFNs, whose HF configs
# name only the activation applied to the gate. The first HF name of each of ours is written.
PLAIN_ACTIVATIONS = {
    "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
    "silu": "silu", "swish": "silu",
}
GATED_ACTIVATIONS = {
    "silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "gelu_pytorch_tanh": "geglu_tanh",
    "gelu_new": "geglu_tanh", "relu": "reglu",
}
_SAME_FUNCTION = {"swish": "silu"}


def activation_from_hf(hf: HFConfig, field: str, gated: bool) -> str:
  table = GATED_ACTIVATIONS if gated else PLAIN_ACTIVATIONS
  name = hf[field]
  if name not in table:
    raise hf.refuse(field, name, f"supported activations: {', '.join(table)}")
  return table[name]


def activation_to_hf(cfg: ModelConfig) -> str | None:
  """The HF activation name of `cfg.activation`, or None when HF has no name for it."""
  table = GATED_ACTIVATIONS if cfg.gated else PLAIN_ACTIVATIONS
  ours = _SAME_FUNCTION.get(cfg.activation, cfg.activation)
  return next((hf for hf, o in table.items() if o == ours), None)


# ------------------------------------------------------------------------------ expressibility


def mismatches(cfg: ModelConfig, **allowed: Any) -> list[str]:
  """One reason per field of `cfg` whose value is not allowed (a value or a tuple of values)."""
  reasons = []
  for field, values in allowed.items():
    values = values if isinstance(values, tuple) else (values,)
    value = getattr(cfg, field)
    if value not in values:
      reasons.append(f"{field}={value!r} (needs {' or '.join(map(repr, values))})")
  return reasons


def one_flag(cfg: ModelConfig, hf_flag: str, *fields: str) -> list[str]:
  """A reason unless `fields` agree, for HF configs whose single flag `hf_flag` sets them all."""
  values = {f: getattr(cfg, f) for f in fields}
  if len(set(values.values())) <= 1:
    return []
  shown = ", ".join(f"{f}={v}" for f, v in values.items())
  return [f"{shown} (one HF flag, {hf_flag}, sets all of them)"]


def decoder_mismatches(cfg: ModelConfig, moe: bool = False) -> list[str]:
  """Choices that none of the supported HF decoder-only families expresses; `moe` says
  whether the family's feed-forward layers are mixtures of experts (Mixtral) or dense."""
  reasons = mismatches(cfg, family="decoder", norm_placement="pre", has_final_norm=True,
                       embed_scale=False)
  if moe and not cfg.moe_experts:
    reasons.append("moe_experts=0 (a dense model; this type has mixture-of-experts layers)")
  if not moe and cfg.moe_experts:
    reasons.append(f"moe_experts={cfg.moe_experts} (this type has dense feed-forward layers)")
  if activation_to_hf(cfg) is None:
    kind = "gated" if cfg.gated else "plain"
    reasons.append(f"activation={cfg.activation!r} (no {kind} HF activation name)")
  return reasons


def derived_head_dim(cfg: ModelConfig) -> list[str]:
  """For HF families that derive head_dim as hidden_size // num_attention_heads."""
  if cfg.dim_per_head * cfg.n_heads != cfg.d_model:
    return [f"head_dim={cfg.head_dim} (needs d_model / n_heads = {cfg.d_model / cfg.n_heads:g})"]
  return []
