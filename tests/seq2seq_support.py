"""Helpers for the encoder-decoder parity tests (T5, Switch Transformers): padded source and
target batches, both models' logits, the parity metric over real target positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from hf_support import PARITY_TOL, assert_loads_back, random_params, save_and_open


def seq2seq_batch(vocab: int, seed: int = 0):
  """Encoder rows: full, left-padded, right-padded; decoder rows: full, left-, right-padded."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (3, 12))
  mask = np.ones((3, 12), np.int64)
  mask[1, :3] = 0
  mask[2, -4:] = 0
  dec = rng.integers(0, vocab, (3, 7))
  dec_mask = np.ones((3, 7), np.int64)
  dec_mask[1, :1] = 0
  dec_mask[2, -2:] = 0
  return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
              decoder_attention_mask=dec_mask)


def reference_logits(model, batch) -> np.ndarray:
  with torch.no_grad():
    return model(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()


def our_logits(model, params, batch) -> np.ndarray:
  inputs = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
  return np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, **x))(params, inputs))


def relative_error(ours, ref, batch) -> float:
  valid = batch["decoder_attention_mask"].astype(bool)
  return float(np.max(np.abs(ours[valid] - ref[valid])) / np.max(np.abs(ref[valid])))


def assert_round_trip(cfg, tmp_path, model_class, seed: int = 0):
  """Our random params -> research.hf.save -> transformers `model_class.from_pretrained`: no
  missing or unexpected tensors, equal logits on a padded batch; and research.hf.load of the
  saved directory gives back bit-identical params. Returns the transformers model."""
  model, params = random_params(cfg, seed)
  path, reference = save_and_open(model, params, tmp_path, model_class)
  batch = seq2seq_batch(cfg.vocab_size, seed=1)
  err = relative_error(our_logits(model, params, batch), reference_logits(reference, batch), batch)
  assert err <= PARITY_TOL, f"relative logit error {err:.2e} > {PARITY_TOL}"
  assert_loads_back(path, cfg, params)
  return reference
