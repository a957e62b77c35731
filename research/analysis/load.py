"""Open a model for analysis: a training run directory or a Hugging Face checkpoint.

    loaded = analysis.load("runs/default")            # research.pretrained.restore
    loaded = analysis.load("path/to/hf_checkpoint")   # research.hf.load (safetensors)
    loaded.model, loaded.params, loaded.tokenizer
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from research import checkpoint, pretrained


@dataclasses.dataclass(frozen=True)
class Loaded:
  model: Any  # a flax.linen Module; its ModelConfig is model.cfg
  params: Any  # plain pytree of arrays
  tokenizer: Any | None  # research.tokenizers.Tokenizer, when the directory holds one
  config: Any | None  # the run's ExperimentConfig (None for an HF checkpoint)
  source: str  # "run" or "hf"

  @property
  def cfg(self):
    return self.model.cfg


def load(path: str | pathlib.Path, step: int | None = None, **hf_overrides) -> Loaded:
  """Restores a run (newest checkpoint, or `step`) or loads an HF checkpoint directory.

  `hf_overrides` are ModelConfig fields for an HF checkpoint (`scan_layers=False`, ...).
  """
  path = pathlib.Path(path)
  config_file = path / checkpoint.CONFIG_FILE
  if not config_file.exists():
    raise FileNotFoundError(f"{path} holds no config.json: it is neither a run directory nor a "
                            "Hugging Face checkpoint")
  if "model_type" in json.loads(config_file.read_text()):
    from research import hf

    if step is not None:
      raise ValueError(f"step={step} applies to run directories; {path} is a Hugging Face checkpoint")
    model, params = hf.load(path, **hf_overrides)
    try:
      tokenizer = hf.load_tokenizer(path)
    except (FileNotFoundError, ValueError):
      tokenizer = None
    return Loaded(model, params, tokenizer, None, "hf")
  if hf_overrides:
    raise ValueError(f"{sorted(hf_overrides)} apply to Hugging Face checkpoints; {path} is a run")
  from research import tokenizers

  config, model, params = pretrained.restore(path, step)
  tokenizer = tokenizers.load(path / "tokenizer") if (path / "tokenizer").is_dir() else None
  return Loaded(model, params, tokenizer, config, "run")
