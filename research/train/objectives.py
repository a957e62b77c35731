"""Training objectives: name -> `Objective` (a loss, and what it needs done to each batch).

    loss(model, params, batch, rng, deterministic) -> (loss_sum, weight_sum, metric_sums)
    prepare(batch, *, tokenizer, config, epoch) -> batch        (host side, numpy, optional)

Losses return sums, not means: the train step divides once by the total weight, so a step
split into microbatches computes exactly the full-batch gradient. `prepare` turns the data
pipeline's batches (input_ids, targets, loss_mask, segment_ids) into what the objective
reads (masked tokens, sentence pairs, spans, ...). It must be a deterministic function of
the batch, the config and the epoch, so a resumed run prepares the same batches; derive
any randomness from a hash of the example's tokens, the data seed and (for dynamic masking)
the epoch, which also makes it independent of how rows are split over hosts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from research.layers import moe

LossFn = Callable[..., tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Objective:
  loss: LossFn
  prepare: Callable | None = None
  # Whether the loop can sample text from the trained model (a causal or prefix LM).
  samples_text: bool = True


def apply_model(model, params, rng, deterministic: bool, **inputs):
  """Runs the model; returns (logits, auxiliary loss to add, extra metrics).

  Mixture-of-experts layers sow their weighted router losses and load metrics into the
  "moe" collection; they are summed over layers here and added to every objective's loss.
  """
  rngs = {"dropout": rng} if rng is not None else {}
  if not getattr(model.cfg, "moe_experts", 0):
    logits = model.apply({"params": params}, deterministic=deterministic, rngs=rngs, **inputs)
    return logits, jnp.zeros((), jnp.float32), {}
  logits, state = model.apply({"params": params}, deterministic=deterministic, rngs=rngs,
                              mutable=[moe.COLLECTION], **inputs)
  aux, metrics = moe.collect_moe_metrics(state[moe.COLLECTION])
  return logits, aux, metrics


def token_cross_entropy(logits, targets, weights):
  """Sum of weighted next-token cross-entropies, total weight, and weighted correct count."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  weights = weights.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return (ce * weights).sum(), weights.sum(), (correct * weights).sum()


def causal_lm(model, params, batch, rng, deterministic=False):
  """Next-token prediction; `loss_mask` selects the scored targets."""
  logits, aux, extra = apply_model(
      model, params, rng, deterministic, input_ids=batch["input_ids"],
      segment_ids=batch.get("segment_ids"))
  loss_sum, weight, correct = token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
  metrics = {"loss": loss_sum, "accuracy": correct, **{k: v * weight for k, v in extra.items()}}
  return loss_sum + aux * weight, weight, metrics


# Kept in step with research.config.train.OBJECTIVES (tests/test_config.py checks).
OBJECTIVES: dict[str, Objective] = {"causal_lm": Objective(loss=causal_lm)}

# ---- Encoder-only objectives (research/train/encoder_objectives.py) ----
from research.train import encoder_objectives  # noqa: E402  (it uses the helpers above)

OBJECTIVES.update({name: Objective(loss=loss, prepare=prepare, samples_text=False)
                   for name, (loss, prepare) in encoder_objectives.LOSSES.items()})


def get(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ValueError(f"train.objective={name!r} is not one of: {', '.join(OBJECTIVES)}")
  return OBJECTIVES[name]
