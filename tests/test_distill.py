"""research.train.distill: the Hinton et al. loss by hand, its alpha = 0 limit, and the chunked
loss against the plain one (values and gradients), with a teacher of another size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.config.distill import DistillConfig
from research.models import registry
from research.train import distill, objectives
from support import tiny

STUDENT = tiny(d_model=32, n_layers=1)
# Another size and an untied output head: the chunked loss reads lm_head/kernel.
TEACHER = tiny(d_model=48, n_layers=2, n_heads=4, tie_embeddings=False, vocab_size=101)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_token_terms_equal_the_formula_by_hand():
  rng = np.random.default_rng(0)
  zs, zt = rng.normal(size=(2, 3, 7)), 3 * rng.normal(size=(2, 3, 9))  # teacher: 2 more logits
  y = rng.integers(0, 7, (2, 3))
  w = np.array([[1, 0, 1], [1, 1, 0]], np.float32)
  t, alpha = 2.5, 0.3
  p = np.exp(_log_softmax(zt[..., :7] / t))
  kl = (p * (np.log(p) - _log_softmax(zs / t))).sum(-1)
  ce = -np.take_along_axis(_log_softmax(zs), y[..., None], -1)[..., 0]
  expected = ((alpha * t * t * kl + (1 - alpha) * ce) * w).sum()
  got = distill.token_terms(jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32), y, w,
                            temperature=t, alpha=alpha, vocab=7)
  assert float(got["loss"]) == pytest.approx(expected, rel=1e-5)
  assert float(got["kl"]) == pytest.approx((kl * w).sum(), rel=1e-5)
  assert float(got["weight"]) == 4.0


def _setup(seed=0):
  student, teacher = registry.build(STUDENT), registry.build(TEACHER)
  params = {"student": registry.init_params(STUDENT, jax.random.key(seed)),
            "teacher": registry.init_params(TEACHER, jax.random.key(seed + 1))}
  ids = np.asarray(jax.random.randint(jax.random.key(seed + 2), (3, 12), 0, 97))
  mask = np.ones((3, 11), np.float32)
  mask[:, :4] = 0
  batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": mask,
           "segment_ids": np.ones((3, 11), np.int32)}
  return student, teacher, params, batch


def test_alpha_zero_is_the_cross_entropy():
  student, teacher, params, batch = _setup()
  distilled = {alpha: distill.make_loss(teacher, DistillConfig(teacher="t", alpha=alpha), vocab=97)
               for alpha in (0.0, 0.5)}

  @jax.jit  # one program for the three losses: one compilation
  def losses(p, b):
    ce = objectives.causal_lm(student, p["student"], b, None, True)[:2]
    return ce, {alpha: loss(student, p, b, None, True)[:2] for alpha, loss in distilled.items()}

  (ce, ce_weight), by_alpha = losses(params, batch)
  got, weight = by_alpha[0.0]
  assert float(got) == pytest.approx(float(ce), rel=1e-6) and float(weight) == float(ce_weight)
  # At alpha > 0 the teacher matters.
  assert abs(float(by_alpha[0.5][0]) - float(ce)) > 1e-3


def test_chunked_loss_equals_the_plain_loss_and_gradients():
  student, teacher, params, batch = _setup()

  def value_and_grad(chunk, params, batch):  # 33 tokens: chunks of 8 leave the last one padded
    loss = distill.make_loss(teacher, DistillConfig(teacher="t", alpha=0.7, temperature=3.0,
                                                    chunk_tokens=chunk), vocab=97)

    def total(student_params):
      value, weight, sums = loss(student, {**params, "student": student_params}, batch, None, True)
      return value, sums

    return jax.value_and_grad(total, has_aux=True)(params["student"])

  # One program for both losses and their gradients: one compilation.
  ((v0, s0), g0), ((v1, s1), g1) = jax.jit(
      lambda p, b: (value_and_grad(0, p, b), value_and_grad(8, p, b)))(params, batch)
  assert float(v1) == pytest.approx(float(v0), rel=1e-5)
  for k in ("kl", "ce", "accuracy"):
    assert float(s1[k]) == pytest.approx(float(s0[k]), rel=1e-5, abs=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g0)


def test_chunked_loss_never_holds_every_tokens_logits():
  # Temporary memory of the compiled gradient: a full [tokens, V] logits buffer (two models'
  # worth, plus their gradients) versus chunks of 16 tokens.
  cfg = tiny(d_model=16, n_layers=1, vocab_size=4096, max_seq_len=256)
  model = registry.build(cfg)
  params = {"student": registry.init_params(cfg, jax.random.key(0)),
            "teacher": registry.init_params(cfg, jax.random.key(1))}
  ids = np.zeros((4, 129), np.int32)
  batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((4, 128), np.float32),
           "segment_ids": np.ones((4, 128), np.int32)}
  temp = {}
  for chunk in (0, 16):
    loss = distill.make_loss(model, DistillConfig(teacher="t", chunk_tokens=chunk), vocab=4096)
    fn = jax.jit(jax.grad(lambda s: loss(model, {**params, "student": s}, batch, None, True)[0]))
    temp[chunk] = fn.lower(params["student"]).compile().memory_analysis().temp_size_in_bytes
  logits_bytes = 4 * 128 * 4096 * 4  # one model's logits of the whole batch
  assert temp[0] > logits_bytes and temp[16] < logits_bytes and temp[0] > 5 * temp[16], temp
