"""`OptimizerConfig`: the optax chain and its learning-rate schedule."""

from __future__ import annotations

import dataclasses

from research.config import validate

OPTIMIZERS = ("adamw", "sgd", "adafactor", "lion")
SCHEDULES = ("cosine", "linear", "constant")
# Parameter groups that weight decay can skip, matched on parameter paths by research.train.optimizer.
DECAY_EXCLUDABLE = ("norms", "biases", "embeddings")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str = "adamw"
  lr: float = 3e-4
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  momentum: float = 0.9  # sgd
  nesterov: bool = False  # sgd
  # Decoupled weight decay (Loshchilov & Hutter 2019) for adamw/lion/adafactor/sgd.
  weight_decay: float = 0.1
  decay_exclude: tuple[str, ...] = ("norms", "biases", "embeddings")
  # Explicit penalties added to the gradient: l2 * w (coupled L2) and l1 * sign(w).
  l1: float = 0.0
  l2: float = 0.0
  schedule: str = "cosine"
  warmup_steps: int = 100
  # None: decay over the whole run (TrainConfig.steps).
  decay_steps: int | None = None
  # Final learning rate as a fraction of lr (cosine and linear).
  min_lr_ratio: float = 0.1
  # Global-norm clipping; 0 switches it off.
  grad_clip: float = 1.0

  def __post_init__(self):
    own = type(self).__name__
    validate.choice(own, "name", self.name, OPTIMIZERS)
    validate.choice(own, "schedule", self.schedule, SCHEDULES)
    validate.positive(own, "lr", self.lr)
    for name in ("weight_decay", "l1", "l2", "grad_clip", "warmup_steps", "eps", "momentum"):
      validate.positive(own, name, getattr(self, name), allow_zero=True)
    for name in ("b1", "b2", "min_lr_ratio"):
      validate.in_range(own, name, getattr(self, name), 0.0, 1.0)
    if self.decay_steps is not None:
      validate.positive(own, "decay_steps", self.decay_steps)
    for group in self.decay_exclude:
      validate.choice(own, "decay_exclude", group, DECAY_EXCLUDABLE)
