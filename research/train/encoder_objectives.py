"""Encoder-only objectives: masked LM (alone or with NSP / SOP) and the fine-tuning heads.

Registered in research.train.objectives as Objective(loss, prepare, samples_text=False):

  mlm                   cross-entropy of the selected tokens (BERT's masked LM; RoBERTa)
  mlm_nsp, mlm_sop      masked LM + next-sentence / sentence-order prediction, summed
  classification        one label per sequence, from the pooled [CLS] vector
  token_classification  one label per token (NER), softmax or CRF (ModelConfig.crf)
  extractive_qa         answer start and end positions

Batch keys: input_ids, segment_ids (1, 2, ... per packed sequence, 0 padding) or
attention_mask, token_type_ids (optional), and per objective: targets + loss_mask (the mlm
objectives; `prepare` writes them), pair_label [B] (0 "B follows A" / original order, 1 "B is
random" / swapped), labels [B] or [B, T] (-1: no label), start_positions and end_positions [B]
(-1: no answer to score). Losses are sums, as the train step expects. The multi-task loss is
exact under microbatching: sum of MLM cross-entropies + sum over rows of the pair loss times
the row's number of masked tokens, over the total masked tokens; i.e. the per-token MLM loss
plus the pair loss averaged over rows weighted by their masked tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from research.layers import crf as crf_lib
from research.models.heads import best_span
from research.train import masking
from research.train.losses import apply_model, token_cross_entropy


def _inputs(batch) -> dict:
  keys = ("input_ids", "attention_mask", "segment_ids", "token_type_ids")
  return {k: batch[k] for k in keys if k in batch}


def _real_BT(batch) -> jax.Array:
  if "segment_ids" in batch:
    return batch["segment_ids"] > 0
  if "attention_mask" in batch:
    return batch["attention_mask"] > 0
  return jnp.ones(batch["input_ids"].shape, bool)


def _forward(model, params, batch, rng, deterministic):
  return apply_model(model, params, rng, deterministic, **_inputs(batch))


def _class_ce(logits, labels):
  """(cross-entropies, correct) for integer labels; labels < 0 give zeros (no label)."""
  safe = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  return ce, (jnp.argmax(logits, axis=-1) == safe).astype(jnp.float32)


def _with_aux(loss_sum, weight, metrics, aux, extra):
  return loss_sum + aux * weight, weight, {**metrics, **{k: v * weight for k, v in extra.items()}}


def mlm(model, params, batch, rng, deterministic=False):
  out, aux, extra = _forward(model, params, batch, rng, deterministic)
  loss_sum, weight, correct = token_cross_entropy(
      out["mlm"], batch["targets"], batch["loss_mask"])
  return _with_aux(loss_sum, weight, {"loss": loss_sum, "accuracy": correct}, aux, extra)


def _mlm_with_pairs(head: str):
  def loss(model, params, batch, rng, deterministic=False):
    out, aux, extra = _forward(model, params, batch, rng, deterministic)
    weights = batch["loss_mask"].astype(jnp.float32)
    mlm_sum, weight, correct = token_cross_entropy(out["mlm"], batch["targets"], weights)
    pair_ce, pair_correct = _class_ce(out[head], batch["pair_label"])
    per_row = weights.sum(axis=1)  # each row's pair loss counts as much as its masked tokens
    pair_sum = (pair_ce * per_row).sum()
    metrics = {"loss": mlm_sum + pair_sum, "mlm_loss": mlm_sum, f"{head}_loss": pair_sum,
               "accuracy": correct, f"{head}_accuracy": (pair_correct * per_row).sum()}
    return _with_aux(mlm_sum + pair_sum, weight, metrics, aux, extra)

  loss.__name__ = f"mlm_{head}"
  return loss


def classification(model, params, batch, rng, deterministic=False):
  out, aux, extra = _forward(model, params, batch, rng, deterministic)
  ce, correct = _class_ce(out["classification"], batch["labels"])
  valid = (batch["labels"] >= 0).astype(jnp.float32)
  loss_sum = (ce * valid).sum()
  return _with_aux(loss_sum, valid.sum(), {"loss": loss_sum, "accuracy": (correct * valid).sum()},
                   aux, extra)


def token_classification(model, params, batch, rng, deterministic=False):
  """Per-token cross-entropy; with a CRF, the sequences' negative log-likelihood (Lafferty et
  al. 2001), both per labelled token. Accuracy is of the argmax or of the Viterbi tags."""
  out, aux, extra = _forward(model, params, batch, rng, deterministic)
  labels = batch["labels"]
  valid = (labels >= 0) & _real_BT(batch)
  weight = valid.astype(jnp.float32)
  emissions = out["token_classification"]
  if "crf" in out:
    loss_sum = -crf_lib.log_likelihood(emissions, labels, valid, out["crf"]).sum()
    predicted, _ = crf_lib.viterbi(emissions, valid, out["crf"])
  else:
    ce, _ = _class_ce(emissions, labels)
    loss_sum = (ce * weight).sum()
    predicted = jnp.argmax(emissions, axis=-1)
  correct = ((predicted == labels) * weight).sum()
  return _with_aux(loss_sum, weight.sum(), {"loss": loss_sum, "accuracy": correct}, aux, extra)


def extractive_qa(model, params, batch, rng, deterministic=False, max_answer_len: int = 30):
  """(CE(start) + CE(end)) / 2 over the real tokens (BERT section 4.2); exact_match counts rows
  whose best span a <= b (at most max_answer_len tokens) is the answer."""
  out, aux, extra = _forward(model, params, batch, rng, deterministic)
  real = _real_BT(batch)
  start, end = (jnp.where(real, out["extractive_qa"][k], -1e9) for k in ("start", "end"))
  ce_start, _ = _class_ce(start, batch["start_positions"])
  ce_end, _ = _class_ce(end, batch["end_positions"])
  valid = (batch["start_positions"] >= 0).astype(jnp.float32)
  loss_sum = (0.5 * (ce_start + ce_end) * valid).sum()
  a, b, _ = best_span(start, end, real, max_answer_len)
  exact = (a == batch["start_positions"]) & (b == batch["end_positions"])
  return _with_aux(loss_sum, valid.sum(), {"loss": loss_sum, "exact_match": (exact * valid).sum()},
                   aux, extra)


def prepare_mlm(batch, *, tokenizer, config, epoch: int):
  """Host side: BERT/RoBERTa/MacBERT masking of the batch (research.train.masking)."""
  return masking.mask_batch(batch, tokenizer, config.train.mlm, seed=config.data.seed, epoch=epoch)


# name -> (loss, prepare); research.train.objectives wraps them as Objectives.
LOSSES = {
    "mlm": (mlm, prepare_mlm),
    "mlm_nsp": (_mlm_with_pairs("nsp"), prepare_mlm),
    "mlm_sop": (_mlm_with_pairs("sop"), prepare_mlm),
    "classification": (classification, None),
    "token_classification": (token_classification, None),
    "extractive_qa": (extractive_qa, None),
}
