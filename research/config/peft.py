"""`PeftConfig`: which parameter-efficient fine-tuning method wraps the model, and its sizes.

    python -m research.train ... train.init_from=runs/base peft.method=lora peft.rank=8

`method="none"` trains every parameter. Any other method (research/peft/, one file each)
freezes the base model and trains only its own parameters. The fields below are shared where
the methods share an idea: `num_tokens` is the prefix length (prefix tuning), the soft prompt
length (prompt tuning) or the adaption prompt length (LLaMA-Adapter).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from research.config import validate

METHODS = ("none", "lora", "prefix", "prompt", "adapter", "llama_adapter")
# Soft-prompt initialisation (Lester et al. 2021, sec. 3.2): embeddings of random vocabulary
# tokens, or N(0, init_std).
PROMPT_INITS = ("vocab", "random")
ADAPTER_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swish")
# Names a LoRA target may use for groups of projections (research.peft.lora expands them).
TARGET_ALIASES: dict[str, tuple[str, ...]] = {
    "attention": ("q", "k", "v", "o"),
    "ffn": ("wi", "wi_gate", "wi_up", "wo"),
}


@dataclasses.dataclass(frozen=True)
class PeftConfig:
  method: str = "none"

  # LoRA (Hu et al. 2021): W x + (alpha / rank) B A x, B zero-initialised.
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  # Projections to adapt: a module name ("q", "wo", "lm_head"), an alias ("attention",
  # "ffn"), or a regular expression matched against the end of the module path
  # ("attn/(q|v)", "layers_3/mlp/.*").
  targets: tuple[str, ...] = ("q", "k", "v", "o")

  # Prefix tuning, prompt tuning and LLaMA-Adapter: learned vectors per layer / input.
  num_tokens: int = 10
  # Prefix tuning (Li & Liang 2021, sec. 4.3): train the prefix through an MLP of this hidden
  # width from a smaller embedding; only the resulting prefix is kept after training.
  prefix_projection: bool = True
  prefix_hidden: int = 128
  prompt_init: str = "vocab"

  # Adapters (Houlsby et al. 2019): bottleneck width and non-linearity.
  bottleneck: int = 16
  adapter_activation: str = "gelu"

  # LLaMA-Adapter (Zhang et al. 2023): adaption prompts in the top `adapter_layers` layers.
  adapter_layers: int = 1

  # Scale of the random inits (LoRA A, adapter down-projection, prefix embedding, ...).
  init_std: float = 0.02

  def __post_init__(self):
    own = type(self).__name__
    validate.choice(own, "method", self.method, METHODS)
    validate.choice(own, "prompt_init", self.prompt_init, PROMPT_INITS)
    validate.choice(own, "adapter_activation", self.adapter_activation, ADAPTER_ACTIVATIONS)
    for name in ("rank", "num_tokens", "prefix_hidden", "bottleneck", "adapter_layers"):
      validate.positive(own, name, getattr(self, name))
    validate.positive(own, "alpha", self.alpha)
    validate.positive(own, "init_std", self.init_std)
    validate.in_range(own, "dropout", self.dropout, 0.0, 0.99)
    if self.method == "lora" and not self.targets:
      raise ValueError(f"{own}.targets is empty: name the projections LoRA adapts, e.g. q,v")
    for target in self.targets:
      try:
        re.compile(target)
      except re.error as err:
        raise ValueError(f"{own}.targets: {target!r} is not a regular expression ({err})") from None

  @property
  def enabled(self) -> bool:
    return self.method != "none"

  @property
  def scale(self) -> float:
    """LoRA's alpha / r (Hu et al. 2021, sec. 4.1)."""
    return self.alpha / self.rank

  def expanded_targets(self) -> tuple[str, ...]:
    out: list[str] = []
    for target in self.targets:
      out.extend(TARGET_ALIASES.get(target, (target,)))
    return tuple(dict.fromkeys(out))

  def to_dict(self) -> dict[str, Any]:
    return validate.to_dict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "PeftConfig":
    return validate.from_dict(cls, values)
