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

from research.train import encoder_objectives
from research.train.losses import apply_model, token_cross_entropy

LossFn = Callable[..., tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Objective:
  loss: LossFn
  prepare: Callable | None = None
  # Whether the loop can sample text from the trained model (a causal or prefix LM).
  samples_text: bool = True
  # (model config, seq_len) -> FLOPs per pipeline token, when the objective changes the lengths
  # the model sees (span corruption); None: ModelConfig.flops_per_token(seq_len).
  flops_per_token: Callable | None = None
  # Turns the logged metrics (sums over the weight) into what is reported, e.g. a ratio of
  # two counts; applied to training intervals and evaluations alike.
  finalize: Callable[[dict], dict] | None = None


def causal_lm(model, params, batch, rng, deterministic=False):
  """Next-token prediction; `loss_mask` selects the scored targets."""
  logits, aux, extra = apply_model(
      model, params, rng, deterministic, input_ids=batch["input_ids"],
      segment_ids=batch.get("segment_ids"))
  loss_sum, weight, correct = token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
  metrics = {"loss": loss_sum, "accuracy": correct, **{k: v * weight for k, v in extra.items()}}
  return loss_sum + aux * weight, weight, metrics


# ---------------------------------------------------- encoder-decoder and prefix-LM objectives


def seq2seq_lm(model, params, batch, rng, deterministic=False):
  """Teacher-forced cross-entropy of an encoder-decoder's decoder; `loss_mask` selects targets."""
  logits, aux, extra = apply_model(
      model, params, rng, deterministic, input_ids=batch["input_ids"],
      attention_mask=batch["attention_mask"], decoder_input_ids=batch["decoder_input_ids"],
      decoder_attention_mask=batch["decoder_attention_mask"])
  loss_sum, weight, correct = token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
  metrics = {"loss": loss_sum, "accuracy": correct, **{k: v * weight for k, v in extra.items()}}
  return loss_sum + aux * weight, weight, metrics


def prefix_lm(model, params, batch, rng, deterministic=False):
  """Cross-entropy of a prefix LM over its scored targets (GLM: Part B of blank infilling)."""
  inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], prefix_len=batch["prefix_len"])
  if model.cfg.block_positions:
    inputs["block_position_ids"] = batch["block_position_ids"]
  logits, aux, extra = apply_model(model, params, rng, deterministic, **inputs)
  loss_sum, weight, correct = token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
  metrics = {"loss": loss_sum, "accuracy": correct, **{k: v * weight for k, v in extra.items()}}
  return loss_sum + aux * weight, weight, metrics


def prepare_span_corruption(batch, *, tokenizer, config, epoch):
  """T5's span corruption of each row (research.data.span_corruption); sentinels are the
  tokenizer's <extra_id_k> or the top ids of the model's vocabulary, fresh noise each epoch."""
  from research.data import noising, span_corruption

  spans = span_corruption.noise_counts(batch["input_ids"].shape[1] + 1)[1]
  sentinels = noising.added_token_ids(
      tokenizer, config.model.vocab_size, [(f"<extra_id_{k}>",) for k in range(spans)],
      "span_corruption's sentinels")
  pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
  return span_corruption.corrupt_batch(
      batch, sentinels=sentinels, eos_id=tokenizer.eos_id, pad_id=pad, decoder_start_id=pad,
      seed=config.data.seed, epoch=epoch)


def span_corruption_flops(model_cfg, seq_len: int) -> float:
  """Per pipeline token: a row of seq_len + 1 tokens runs the encoder over its corrupted
  inputs and the decoder over its targets (research.data.span_corruption.corrupted_lengths)."""
  from research.data import span_corruption

  encoder, decoder = span_corruption.corrupted_lengths(seq_len + 1)
  return model_cfg.flops_per_token(encoder, decoder_len=decoder) * encoder / seq_len


# GLM's added tokens, as their tokenizers spell them.
GLM_TOKENS = (("[MASK]", "<mask>"), ("[sop]", "<|startofpiece|>", "<sop>"),
              ("[eop]", "<|endofpiece|>", "<eop>"))


def prepare_blank_infilling(batch, *, tokenizer, config, epoch):
  """GLM's blank infilling of each row (research.data.blank_infilling), fresh spans each epoch."""
  from research.data import blank_infilling, noising

  mask_id, start_id, end_id = noising.added_token_ids(
      tokenizer, config.model.vocab_size, GLM_TOKENS, "blank_infilling's [MASK], [sop], [eop]")
  return blank_infilling.infill_batch(
      batch, mask_id=mask_id, start_id=start_id, end_id=end_id,
      pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else 0, seed=config.data.seed,
      epoch=epoch, two_d=config.model.block_positions)


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
    # Raffel et al. (2020): sentinels for 15% noise in spans of mean length 3.
    "span_corruption": Objective(loss=seq2seq_lm, prepare=prepare_span_corruption,
                                 samples_text=False, flops_per_token=span_corruption_flops),
    # Du et al. (2022): autoregressive blank infilling with 2D positions.
    "blank_infilling": Objective(loss=prefix_lm, prepare=prepare_blank_infilling,
                                 samples_text=False),
}

# Encoder-only objectives (research/train/encoder_objectives.py).
OBJECTIVES.update({name: Objective(loss=loss, prepare=prepare, samples_text=False)
                   for name, (loss, prepare) in encoder_objectives.LOSSES.items()})


def get(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ValueError(f"train.objective={name!r} is not one of: {', '.join(OBJECTIVES)}")
  return OBJECTIVES[name]
