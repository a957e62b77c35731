"""HF `model_type` -> `Converter`: everything one family needs, both ways.

A family module (research/hf/llama.py, gpt2.py, ...) builds one `Converter` per model_type it
reads and `register`s it; research/hf/__init__.py imports the family modules. When a
ModelConfig is saved without naming a model_type, the registered types are tried in
registration order and the first that expresses it exactly is written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from research.config.model import ModelConfig
from research.hf import errors
from research.hf.tensors import Rule

# Buffers that checkpoints of some transformers versions carry but that hold no learned
# weights: rotary inverse frequencies and the old causal-mask constants.
COMMON_IGNORED = (r"rotary_emb\.(original_)?inv_freq$", r"\.masked_bias$")


@dataclasses.dataclass(frozen=True)
class Converter:
  """How one HF model_type maps onto ModelConfig and onto our parameter tree."""

  model_type: str
  # The transformers class written to config.json's "architectures".
  architecture: str
  # Prefix of the base model's tensors ("model.", "transformer."). Checkpoints saved from the
  # base model (GPT-2's and BLOOM's originals) omit it; loading adds it back.
  base_prefix: str
  # HF config.json dict -> ModelConfig fields (raises ConversionError for what we cannot express).
  config_from_hf: Callable[[Mapping[str, Any]], dict[str, Any]]
  # ModelConfig -> config.json entries (model_type and architectures are added by the caller).
  config_to_hf: Callable[[ModelConfig], dict[str, Any]]
  # Why this model_type cannot express a ModelConfig exactly; empty when it can.
  unsupported: Callable[[ModelConfig], list[str]]
  # The tensor table for a config (see research.hf.tensors).
  tensors: Callable[[ModelConfig], Sequence[Rule]]
  # Regexes of tensor names that loading skips (buffers without learned values).
  ignored: tuple[str, ...] = COMMON_IGNORED
  # Other names a checkpoint may use for a table name (older or newer transformers).
  aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # (config.json dict, research.hf.checkpoint.Checkpoint) -> the ModelConfig fields that the
  # stored tensors decide, which `load` sets over config_from_hf's (T5: whether the head is
  # tied); None: the config decides alone.
  fields_from_checkpoint: Callable[[Mapping[str, Any], Any], dict[str, Any]] | None = None
  # The class to write for a config when it depends on it (an encoder's heads: BertModel,
  # BertForMaskedLM, ...); None: `architecture`.
  architecture_for: Callable[[ModelConfig], str | None] | None = None

  def is_ignored(self, name: str) -> bool:
    return any(re.search(pattern, name) for pattern in self.ignored)


_CONVERTERS: dict[str, Converter] = {}


def register(converter: Converter) -> Converter:
  if converter.model_type in _CONVERTERS:
    raise ValueError(f"model_type {converter.model_type!r} is registered twice")
  _CONVERTERS[converter.model_type] = converter
  return converter


def supported() -> list[str]:
  """Registered model types, in the order they are tried when saving."""
  return list(_CONVERTERS)


def get(model_type: Any) -> Converter:
  if model_type not in _CONVERTERS:
    raise errors.unsupported_model_type(model_type, _CONVERTERS)
  return _CONVERTERS[model_type]
