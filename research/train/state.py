"""`TrainState`: everything a step reads and writes, as one pytree (checkpointed whole)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32: steps attempted (skipped ones included)
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32 key data (raw, so checkpoints hold plain arrays)
  loss_scale: jax.Array  # float32: 1 unless fp16
  good_steps: jax.Array  # int32: finite steps since the loss scale last changed
  nonfinite_run: jax.Array  # int32: consecutive skipped steps
  skipped: jax.Array  # int32: skipped steps in total

  @classmethod
  def create(cls, params, optimizer, rng: jax.Array, loss_scale: float = 1.0) -> "TrainState":
    # A fresh array per counter: shared buffers could not all be donated to the step.
    zero = lambda: jnp.zeros((), jnp.int32)
    return cls(
        step=zero(), params=params, opt_state=optimizer.init(params),
        rng=jax.random.key_data(rng), loss_scale=jnp.asarray(loss_scale, jnp.float32),
        good_steps=zero(), nonfinite_run=zero(), skipped=zero(),
    )
