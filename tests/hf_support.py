"""Helpers for the Hugging Face parity tests: random-weight transformers models, padded
batches, our jitted forward, and the parity metric.

Parity metric: max |ours - reference| / max |reference| over the logits of non-padding
positions, in float32. `PARITY_TOL` is the bound every family must meet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

import research.hf

PARITY_TOL = 1e-4
SEQ = 12


def perturb(model, scale: float = 0.1, seed: int | None = None):
  """A transformers `model` in eval mode with every parameter (norms and biases included)
  moved by scale * N(0, 1), so a dropped or swapped one shows. `seed`: reseed torch first."""
  if seed is not None:
    torch.manual_seed(seed)
  with torch.no_grad():
    for param in model.parameters():
      param.add_(scale * torch.randn_like(param))
  return model.eval()


def hf_model(model_type: str, seed: int = 0, **config):
  """A transformers *ForCausalLM from a small config, eager attention, fp32, eval mode, with
  every parameter (norms and biases included) moved away from its initial value."""
  hf_config = transformers.AutoConfig.for_model(model_type, **config)
  torch.manual_seed(seed)
  return perturb(transformers.AutoModelForCausalLM.from_config(
      hf_config, attn_implementation="eager", dtype=torch.float32))


def random_params(cfg, seed: int = 0):
  """(our model, its initial params moved by 0.1 * N(0, 1): non-trivial norms and biases)."""
  from research.models import registry

  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda x: jnp.asarray(np.asarray(x) + 0.1 * rng.standard_normal(x.shape), x.dtype),
      registry.init_params(cfg, jax.random.key(seed)))
  return registry.build(cfg), params


def save_and_open(model, params, tmp_path, model_class, **load_options):
  """research.hf.save, then transformers `model_class.from_pretrained` (eager, fp32, eval),
  asserting no missing, unexpected or mismatched tensors. Returns (path, reference)."""
  path = research.hf.save(model, params, tmp_path / "ours")
  reference, info = model_class.from_pretrained(
      path, attn_implementation="eager", dtype=torch.float32, output_loading_info=True,
      **load_options)
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  return path, reference.eval()


def assert_loads_back(path, cfg, params):
  """research.hf.load of a saved directory gives back bit-identical params."""
  _, loaded = research.hf.load(path, scan_layers=cfg.scan_layers)
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def padded_batch(vocab: int, seed: int = 0):
  """ids, attention mask and positions for three rows: no padding, left, right padding."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (3, SEQ)).astype(np.int64)
  mask = np.ones((3, SEQ), np.int64)
  mask[1, :3] = 0
  mask[2, -4:] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return ids, mask, positions


def reference_logits(model, ids, mask, positions) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits.float().numpy()


def our_logits(model, params, ids, mask, positions) -> np.ndarray:
  fn = jax.jit(lambda p, i, m, pos: model.apply(
      {"params": p}, input_ids=i, attention_mask=m, position_ids=pos))
  return np.asarray(fn(params, ids.astype(np.int32), mask.astype(np.int32),
                       positions.astype(np.int32)))


def relative_error(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
  valid = mask.astype(bool)
  return float(np.max(np.abs(ours[valid] - ref[valid])) / np.max(np.abs(ref[valid])))


def assert_parity(reference, tmp_path, **overrides):
  """save_pretrained(reference) -> research.hf.load -> equal logits on a padded batch."""
  path = tmp_path / "hf"
  reference.save_pretrained(path)
  model, params = research.hf.load(path, **overrides)
  ids, mask, positions = padded_batch(model.cfg.vocab_size)
  ref = reference_logits(reference, ids, mask, positions)
  ours = our_logits(model, params, ids, mask, positions)
  err = relative_error(ours, ref, mask)
  assert err <= PARITY_TOL, f"relative logit error {err:.2e} > {PARITY_TOL}"
  return model, params


def assert_round_trip(cfg, tmp_path, seed: int = 0, **load_options):
  """Our random params -> research.hf.save -> transformers from_pretrained: equal logits;
  and research.hf.load of the saved directory gives back bit-identical params.

  `load_options` go to from_pretrained (e.g. experts_implementation for Mixtral)."""
  model, params = random_params(cfg, seed)
  path, reference = save_and_open(model, params, tmp_path, transformers.AutoModelForCausalLM,
                                  **load_options)
  ids, mask, positions = padded_batch(cfg.vocab_size, seed=1)
  err = relative_error(our_logits(model, params, ids, mask, positions),
                       reference_logits(reference, ids, mask, positions), mask)
  assert err <= PARITY_TOL, f"relative logit error {err:.2e} > {PARITY_TOL}"
  assert_loads_back(path, cfg, params)
  return path
