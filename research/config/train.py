"""`TrainConfig`: the loop around the train step (steps, precision, logging, checkpoints)."""

from __future__ import annotations

import dataclasses

from research.config import roles, validate
from research.config.masking import MaskingConfig

PRECISIONS = ("fp32", "bf16", "fp16")

# ---- Encoder-only objectives (research/train/encoder_objectives.py) ----
# Objective -> the encoder heads (ModelConfig.encoder_heads) it trains.
ENCODER_OBJECTIVE_HEADS = {
    "mlm": ("mlm",),
    "mlm_nsp": ("mlm", "nsp"),
    "mlm_sop": ("mlm", "sop"),
    "classification": ("classification",),
    "token_classification": ("token_classification",),
    "extractive_qa": ("extractive_qa",),
}
# Objectives that read sentence pairs, and the DataConfig.pairs that builds them.
PAIR_OBJECTIVES = {"mlm_nsp": "nsp", "mlm_sop": "sop"}

OBJECTIVES = (("causal_lm", "sft", "span_corruption", "blank_infilling")
              + tuple(ENCODER_OBJECTIVE_HEADS))
# The model families each objective trains, and each family's objective when none is chosen
# (research.config.registry.from_preset; ExperimentConfig checks the pair).
OBJECTIVE_FAMILIES = {
    "causal_lm": ("decoder", "prefix_lm"),
    "sft": ("decoder",),
    "span_corruption": ("encoder_decoder",),
    "blank_infilling": ("prefix_lm",),
    **{name: ("encoder",) for name in ENCODER_OBJECTIVE_HEADS},
}
DEFAULT_OBJECTIVE = {
    "decoder": "causal_lm", "encoder": "mlm", "encoder_decoder": "span_corruption",
    "prefix_lm": "blank_infilling",
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = roles.control(1000)
  seed: int = 0
  objective: str = "causal_lm"
  # Microbatches per step: the global batch is split and gradients summed before one update.
  grad_accum: int = roles.layout(1)
  # fp32: everything fp32. bf16: fp32 master weights, bf16 compute. fp16: fp16 compute with
  # dynamic loss scaling (Micikevicius et al. 2018).
  precision: str = "fp32"
  loss_scale_init: float = 2.0 ** 15
  loss_scale_period: int = 2000  # good steps before the fp16 loss scale doubles
  # Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.
  max_nonfinite: int = roles.control(10)
  # How the mlm, mlm_nsp and mlm_sop objectives mask their inputs.
  mlm: MaskingConfig = dataclasses.field(default_factory=MaskingConfig)
  # Fine-tuning: start from the parameters of a run directory (its checkpoint `init_step`,
  # None: the newest) or of a Hugging Face save_pretrained directory. Only parameters are
  # taken; the optimizer, step and data position start afresh. With a PEFT method this is the
  # frozen base model.
  init_from: str | None = None
  init_step: int | None = None

  log_every: int = roles.control(50)
  eval_every: int = roles.control(500)
  eval_batches: int = roles.control(20)
  sample_every: int = roles.control(0)  # 0: sample only at the end
  sample_prompt: str = roles.control("\n")
  sample_tokens: int = roles.control(200)  # 0: no samples at all
  sample_temperature: float = roles.control(0.8)

  checkpoint_every: int = roles.control(500)
  keep_checkpoints: int = roles.control(3)
  keep_best: bool = roles.control(True)
  async_checkpoint: bool = roles.control(True)

  progress: bool = roles.control(True)
  tensorboard: bool = roles.control(True)

  def __post_init__(self):
    own = type(self).__name__
    validate.choice(own, "precision", self.precision, PRECISIONS)
    validate.choice(own, "objective", self.objective, OBJECTIVES)
    for name in ("steps", "grad_accum", "log_every", "eval_batches", "keep_checkpoints",
                 "max_nonfinite", "loss_scale_period"):
      validate.positive(own, name, getattr(self, name))
    for name in ("eval_every", "checkpoint_every", "sample_every", "sample_tokens"):
      validate.positive(own, name, getattr(self, name), allow_zero=True)
    validate.positive(own, "loss_scale_init", self.loss_scale_init)
    if self.init_from is not None and not self.init_from:
      raise ValueError(f"{own}.init_from is empty; give a run or Hugging Face directory, or none")
    if self.init_step is not None:
      validate.positive(own, "init_step", self.init_step, allow_zero=True)
    validate.positive(own, "sample_temperature", self.sample_temperature, allow_zero=True)

  @property
  def compute_dtype(self) -> str:
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[self.precision]
