"""Knowledge distillation (Hinton et al. 2015): the student matches a frozen teacher's softened
next-token distribution as well as the labels.

Per scored token (weights: the data's loss_mask), with logits z, temperature T and weight alpha:

    alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

(Hinton et al. 2015, sec. 2; the T^2 keeps the soft term's gradients on the hard term's scale
as T changes). At alpha = 0 it is the plain cross-entropy. The KL covers the first
min(V_student, V_teacher) logits: padded vocabulary rows beyond the tokenizer are shared ids
of no token.

The loss reads params {"student": ..., "teacher": ...}; the teacher runs deterministically
(no dropout) in the same jitted step, on parameters sharded like any other (see
research.train.finetune), and no gradient reaches it. With `chunk_tokens` > 0 the logits are
computed from the final hidden states a chunk of tokens at a time inside a `lax.scan`, and
recomputed in the backward pass (`jax.checkpoint`), so neither model's [B, T, V] logits
exist at once; the models' own unused output projections are dead code XLA removes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from research.config.distill import DistillConfig
from research.layers import moe
from research.train import losses

TERMS = ("loss", "kl", "ce", "accuracy", "weight")


def token_terms(student_logits, teacher_logits, targets, weights, *, temperature: float,
                alpha: float, vocab: int) -> dict[str, jax.Array]:
  """Weighted sums over tokens of the distillation loss and its parts."""
  z_s = student_logits.astype(jnp.float32)
  z_t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  ce = optax.softmax_cross_entropy_with_integer_labels(z_s, targets)
  log_q = jax.nn.log_softmax(z_s[..., :vocab] / temperature, axis=-1)
  log_p = jax.nn.log_softmax(z_t[..., :vocab] / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  per_token = alpha * temperature ** 2 * kl + (1.0 - alpha) * ce
  w = weights.astype(jnp.float32)
  correct = (jnp.argmax(z_s, axis=-1) == targets).astype(jnp.float32)
  return {"loss": (per_token * w).sum(), "kl": (kl * w).sum(), "ce": (ce * w).sum(),
          "accuracy": (correct * w).sum(), "weight": w.sum()}


def hidden_states(model, params, rng, deterministic: bool, **inputs):
  """(final hidden states [B, T, D], auxiliary loss): the decoder sows `final_hidden`."""
  moe_layers = bool(getattr(model.cfg, "moe_experts", 0))
  mutable = ["intermediates"] + ([moe.COLLECTION] if moe_layers else [])
  _, state = model.apply({"params": params}, deterministic=deterministic,
                         rngs={"dropout": rng} if rng is not None else {}, mutable=mutable, **inputs)
  sown = state.get("intermediates", {}).get("final_hidden")
  if sown is None:
    raise ValueError(f"distill.chunk_tokens needs the model to sow 'final_hidden' (the decoder "
                     f"does); {type(model).__name__} does not: use distill.chunk_tokens=0")
  aux = moe.collect_moe_metrics(state[moe.COLLECTION])[0] if moe_layers else jnp.zeros((), jnp.float32)
  # A soft prompt (PEFT prompt tuning) adds positions in front; the tokens are the last T.
  return sown[0][:, -inputs["input_ids"].shape[1]:], aux


def unembedding(model, params):
  """h -> float32 logits, the model's output projection (tied embedding or lm_head)."""
  cfg = model.cfg
  dtype = jnp.dtype(cfg.dtype)
  if cfg.tie_embeddings:
    table = params["embed"]["tokens"]["embedding"]
    return lambda h: jnp.einsum("...D,VD->...V", h.astype(dtype), table.astype(dtype)).astype(jnp.float32)
  kernel = params["lm_head"]["kernel"]
  return lambda h: jnp.einsum("...D,DV->...V", h.astype(dtype), kernel.astype(dtype)).astype(jnp.float32)


def chunked_terms(h_student, unembed_student, h_teacher, unembed_teacher, targets, weights,
                  chunk: int, **kw) -> dict[str, jax.Array]:
  """`token_terms` summed over chunks of `chunk` tokens, computing each chunk's logits only."""
  n = targets.size
  pad = (-n) % chunk

  def chunks(x):
    x = x.reshape(n, *x.shape[2:])
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape(-1, chunk, *x.shape[1:])

  @jax.checkpoint
  def body(carry, xs):
    hs, ht, y, w = xs
    terms = token_terms(unembed_student(hs), unembed_teacher(ht), y, w, **kw)
    return {k: carry[k] + terms[k] for k in carry}, None

  zero = {k: jnp.zeros((), jnp.float32) for k in TERMS}
  sums, _ = jax.lax.scan(body, zero, (chunks(h_student), chunks(h_teacher), chunks(targets),
                                      chunks(weights)))
  return sums


def make_loss(teacher_model, cfg: DistillConfig, vocab: int):
  """The distillation objective for `teacher_model` (an objectives.LossFn)."""
  kw = dict(temperature=cfg.temperature, alpha=cfg.alpha, vocab=vocab)

  def distillation(model, params, batch, rng, deterministic=False):
    inputs = dict(input_ids=batch["input_ids"], segment_ids=batch.get("segment_ids"))
    student, teacher = params["student"], params["teacher"]
    if cfg.chunk_tokens:
      h_s, aux = hidden_states(model, student, rng, deterministic, **inputs)
      h_t, _ = hidden_states(teacher_model, teacher, None, True, **inputs)
      sums = chunked_terms(h_s, unembedding(model, student), h_t, unembedding(teacher_model, teacher),
                           batch["targets"], batch["loss_mask"], cfg.chunk_tokens, **kw)
    else:
      z_s, aux, _ = losses.apply_model(model, student, rng, deterministic, **inputs)
      z_t, _, _ = losses.apply_model(teacher_model, teacher, None, True, **inputs)
      sums = token_terms(z_s, z_t, batch["targets"], batch["loss_mask"], **kw)
    weight = sums.pop("weight")
    return sums["loss"] + aux * weight, weight, sums

  return distillation
