"""`DistillConfig`: knowledge distillation from a trained teacher (Hinton et al. 2015).

    python -m research.train ... distill.teacher=runs/big distill.temperature=2 distill.alpha=0.5

With a teacher set, the next-token objective (causal_lm or sft) becomes, per scored token,

    alpha * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T)) + (1 - alpha) * CE(z_student, y)

(Hinton et al. 2015, sec. 2: the T^2 keeps the soft targets' gradients on the scale of the hard
ones as T changes). The teacher is any restored run directory or Hugging Face directory whose
tokenizer is the student's; research/train/distill.py runs it inside the train step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from research.config import validate


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  # A run directory (research.pretrained.restore) or a Hugging Face save_pretrained directory;
  # None: no distillation.
  teacher: str | None = None
  # The teacher run's checkpoint step; None: its newest.
  teacher_step: int | None = None
  temperature: float = 2.0
  # Weight of the soft (teacher) term; 1 - alpha weighs the hard-label cross-entropy.
  alpha: float = 0.5
  # Tokens per chunk of the loss: the logits of only this many tokens (student and teacher)
  # exist at once, recomputed in the backward pass. 0: the whole batch's logits at once.
  chunk_tokens: int = 0

  def __post_init__(self):
    own = type(self).__name__
    validate.positive(own, "temperature", self.temperature)
    validate.in_range(own, "alpha", self.alpha, 0.0, 1.0)
    validate.positive(own, "chunk_tokens", self.chunk_tokens, allow_zero=True)
    if self.teacher is not None and not self.teacher:
      raise ValueError(f"{own}.teacher is empty; give a run or Hugging Face directory, or none")
    if self.teacher_step is not None:
      validate.positive(own, "teacher_step", self.teacher_step, allow_zero=True)

  @property
  def enabled(self) -> bool:
    return self.teacher is not None

  def to_dict(self) -> dict[str, Any]:
    return validate.to_dict(self)
