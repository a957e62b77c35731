"""`ExperimentConfig`: everything a run needs, one frozen dataclass per concern.

    ExperimentConfig(model=..., data=..., optimizer=..., train=..., mesh=..., peft=..., distill=...)

It is what `python -m research.train --config NAME` builds, what dotted overrides edit
(`model.n_layers=4`), and what `config.json` in a run directory holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from research.config import roles, validate
from research.config.data import DataConfig
from research.config.distill import DistillConfig
from research.config.mesh import MeshConfig
from research.config.model import ModelConfig
from research.config.optim import OptimizerConfig
from research.config.peft import PeftConfig
from research.config.train import (ENCODER_OBJECTIVE_HEADS, OBJECTIVE_FAMILIES, PAIR_OBJECTIVES,
                                   TrainConfig)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  name: str = roles.control("default")
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  # Post-training (research/peft, research/train/distill.py).
  peft: PeftConfig = dataclasses.field(default_factory=PeftConfig)
  distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)

  def __post_init__(self):
    families = OBJECTIVE_FAMILIES.get(self.train.objective, ())
    if self.model.family not in families:
      raise ValueError(
          f"train.objective={self.train.objective!r} does not train model.family="
          f"{self.model.family!r}; it trains: {', '.join(families)}")
    if self.data.batch_size % self.train.grad_accum:
      raise ValueError(f"data.batch_size={self.data.batch_size} must be divisible by "
                       f"train.grad_accum={self.train.grad_accum}")
    if self.mesh.stage > 1:
      self.effective_model()  # validates n_layers against the stage count
      if (self.data.batch_size // self.train.grad_accum) % self.mesh.pipeline_microbatches:
        raise ValueError(
            f"data.batch_size={self.data.batch_size} / train.grad_accum={self.train.grad_accum} "
            f"must be divisible by mesh.pipeline_microbatches={self.mesh.pipeline_microbatches}")
    if self.model.position == "learned" and self.data.seq_len > self.model.max_input_len:
      raise ValueError(f"data.seq_len={self.data.seq_len} exceeds model.max_seq_len="
                       f"{self.model.max_seq_len}, the size of the learned position table"
                       + ("" if self.model.max_input_len == self.model.max_seq_len else
                          f" less the {self.model.max_seq_len - self.model.max_input_len} rows "
                          "before RoBERTa's first position"))
    self._check_encoder_objective()
    self._check_post_training()

  def _check_encoder_objective(self) -> None:
    """Encoder objectives need their heads, and sentence-pair objectives their pair data."""
    objective, model = self.train.objective, self.model
    heads = ENCODER_OBJECTIVE_HEADS.get(objective)
    if heads is None:  # OBJECTIVE_FAMILIES has matched the objective to the family
      return
    missing = [h for h in heads if h not in model.encoder_heads]
    if missing:
      raise ValueError(f"train.objective={objective!r} needs model.encoder_heads to include "
                       f"{missing} (got {model.encoder_heads!r})")
    pairs = PAIR_OBJECTIVES.get(objective, "none")
    if self.data.pairs != pairs:
      raise ValueError(f"train.objective={objective!r} needs data.pairs={pairs!r} (got "
                       f"{self.data.pairs!r})")

  def _check_post_training(self):
    """SFT, PEFT and distillation settings that only make sense together."""
    objective, peft = self.train.objective, self.peft
    if objective == "sft" and self.data.loss_on != "answer":
      raise ValueError("train.objective='sft' scores the responses only: set data.loss_on=answer "
                       "(a synthetic task or a .jsonl file of prompt/response records)")
    if self.distill.enabled and objective not in ("causal_lm", "sft"):
      raise ValueError(f"distill.teacher distils next-token distributions; train.objective="
                       f"{objective!r} is not one of 'causal_lm', 'sft'")
    if peft.enabled and self.mesh.stage > 1:
      raise ValueError(f"peft.method={peft.method!r} does not support pipeline parallelism "
                       f"(mesh.stage={self.mesh.stage}); use mesh.stage=1")
    if peft.method == "prompt":
      if self.model.family not in ("decoder", "prefix_lm"):
        raise ValueError(f"peft.method='prompt' prepends soft-prompt embeddings to a causal or "
                         f"prefix LM's input; model.family={self.model.family!r} is not one "
                         "(the other methods wrap every family)")
      if self.data.pack:
        raise ValueError("peft.method='prompt' prepends one soft prompt to each row, so with "
                         "data.pack=true only a row's first example would see it; set data.pack=false")
      if self.model.position == "learned" and self.data.seq_len + peft.num_tokens > self.model.max_seq_len:
        raise ValueError(
            f"data.seq_len={self.data.seq_len} + peft.num_tokens={peft.num_tokens} exceeds "
            f"model.max_seq_len={self.model.max_seq_len}, the size of the learned position table")
    if peft.method == "llama_adapter" and peft.adapter_layers > self.model.n_layers:
      raise ValueError(f"peft.adapter_layers={peft.adapter_layers} exceeds model.n_layers="
                       f"{self.model.n_layers}")

  def effective_model(self) -> ModelConfig:
    """The model as trained: bf16/fp16 precision sets the compute dtype (params stay fp32),
    and a mesh with stage > 1 pipelines the layer stack."""
    model = self.model
    if self.train.precision != "fp32":
      model = model.replace(dtype=self.train.compute_dtype)
    if self.mesh.stage > 1:
      model = model.replace(pipeline_stages=self.mesh.stage,
                            pipeline_microbatches=self.mesh.pipeline_microbatches)
    return model

  def to_dict(self) -> dict[str, Any]:
    return validate.to_dict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
    return validate.from_dict(cls, values)

  def replace(self, **changes: Any) -> "ExperimentConfig":
    return dataclasses.replace(self, **changes)
