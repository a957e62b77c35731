"""Training objectives: name -> `Objective` (a loss, and what it needs done to each batch).

    loss(model, params, batch, rng, deterministic) -> (loss_sum, weight_sum, metric_sums)
    prepare(batch, *, tokenizer, config, epoch) -> batch        (host side, numpy, optional)
    finalize(metrics) -> metrics                                (host side, optional)

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
  # Turns the logged metrics (sums over the weight) into what is reported, e.g. a ratio of
  # two counts; applied to training intervals and evaluations alike.
  finalize: Callable[[dict], dict] | None = None


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


# ------------------------------------------------------------ supervised fine-tuning


def response_exact_match(logits, targets, weights):
  """(responses predicted exactly, responses) as float32 counts.

  A response is a maximal run of scored targets: loss_on="answer" scores each response and
  its EOS, and never the prompt between two. It is exact when every argmax prediction in it is
  right; under teacher forcing that holds exactly when greedy decoding from the prompt
  reproduces the response and then stops. In packed rows, a run at the start of a row has
  its prompt in the previous row and is not counted; a response cut by the row's end is
  scored on its visible part (research.train.evaluate scores whole, unpacked pairs).
  """
  scored = weights > 0
  # A run at the start of a row continues a response of the previous row: leave it out.
  scored = scored & (jnp.cumsum(~scored, axis=1) > 0)
  wrong = scored & (jnp.argmax(logits, axis=-1) != targets)
  starts = scored & ~jnp.pad(scored[:, :-1], ((0, 0), (1, 0)))
  n = scored.size
  # Each scored target's response number, counted over the whole batch; the rest go to n.
  run = jnp.where(scored, jnp.cumsum(starts.reshape(-1)).reshape(scored.shape) - 1, n)
  errors = jax.ops.segment_sum(wrong.reshape(-1).astype(jnp.int32), run.reshape(-1),
                               num_segments=n + 1)[:n]
  count = starts.sum()
  exact = ((jnp.arange(n) < count) & (errors == 0)).sum()
  return exact.astype(jnp.float32), count.astype(jnp.float32)


def sft(model, params, batch, rng, deterministic=False):
  """Supervised fine-tuning: next-token cross-entropy on the responses only (the data's
  loss_on="answer" mask: prompt and padding weigh 0, each response token and its EOS 1)."""
  logits, aux, extra = apply_model(
      model, params, rng, deterministic, input_ids=batch["input_ids"],
      segment_ids=batch.get("segment_ids"))
  loss_sum, weight, correct = token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
  exact, responses = response_exact_match(logits, batch["targets"], batch["loss_mask"])
  # Counts: the step divides both by the weight, and finalize_sft takes their ratio.
  metrics = {"loss": loss_sum, "accuracy": correct, "exact_match": exact, "responses": responses,
             **{k: v * weight for k, v in extra.items()}}
  return loss_sum + aux * weight, weight, metrics


def finalize_sft(metrics: dict) -> dict:
  """exact_match: the fraction of responses predicted exactly."""
  out = dict(metrics)
  responses = out.pop("responses", None)
  if responses is not None and "exact_match" in out:
    out["exact_match"] = out["exact_match"] / max(responses, 1e-9)
  return out


# Kept in step with research.config.train.OBJECTIVES (tests/test_config.py checks).
OBJECTIVES: dict[str, Objective] = {
    "causal_lm": Objective(loss=causal_lm),
    "sft": Objective(loss=sft, finalize=finalize_sft),
}


def get(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ValueError(f"train.objective={name!r} is not one of: {', '.join(OBJECTIVES)}")
  return OBJECTIVES[name]
