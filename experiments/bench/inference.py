"""Decode throughput: no cache vs contiguous KV cache vs paged KV cache (continuous batching).

One random-weight LLaMA-style model (GQA, RoPE) generates `new` greedy tokens for `batch`
prompts of `prompt` tokens each, three ways:

  no_cache    every step re-runs the full forward over the sequence so far (jitted at the
              final width, the causal mask keeps later columns out)
  contiguous  research.inference.generate: prefill, then a scanned decode over the cache
  paged       research.inference.engine.Engine: the same requests through the serving
              engine (page allocation, prefill per request, batched decode steps)

Each is run once to compile, then timed; tokens/s counts generated tokens only. The three
must produce the same tokens (checked; a mismatch is reported in the row).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from research.config import ModelConfig
from research.inference.engine import Engine
from research.inference.generate import generate, left_pad
from research.inference.sampling import SamplingConfig
from research.models import registry


@dataclasses.dataclass(frozen=True)
class Size:
  d_model: int
  n_layers: int
  n_heads: int
  kv_heads: int
  vocab: int
  batch: int
  prompt: int
  new: int
  page_size: int


SIZES = {
    "tiny": Size(32, 2, 4, 2, 97, 2, 6, 4, 4),
    "cpu": Size(256, 4, 8, 2, 1024, 8, 64, 64, 16),
    "full": Size(2048, 16, 16, 4, 32000, 32, 512, 256, 16),
}
NOTES = "tokens_per_s: generated tokens / wall seconds after a compiling run; greedy decoding."


def _model(size: Size):
  cfg = ModelConfig(vocab_size=size.vocab, d_model=size.d_model, n_layers=size.n_layers,
                    n_heads=size.n_heads, n_kv_heads=size.kv_heads, init_std=0.3,
                    max_seq_len=size.prompt + size.new)
  return registry.build(cfg), registry.init_params(cfg, jax.random.key(0))


@functools.lru_cache(maxsize=None)
def _next_token_fn(model):
  """jit(params, ids, n) -> argmax of the logits at position n - 1: one compilation per width."""
  return jax.jit(lambda p, ids, n: jnp.argmax(model.apply({"params": p}, input_ids=ids)[:, n - 1], -1))


def _no_cache(model, params, prompts, new):
  width = len(prompts[0]) + new
  forward = _next_token_fn(model)
  ids = np.zeros((len(prompts), width), np.int32)
  ids[:, :len(prompts[0])] = prompts
  for n in range(len(prompts[0]), width):
    ids[:, n] = np.asarray(forward(params, ids, n))
  return ids[:, len(prompts[0]):].tolist()


def _contiguous(model, params, prompts, new):
  ids, mask = left_pad(prompts)
  return np.asarray(generate(model, params, ids, mask, SamplingConfig(max_new_tokens=new))).tolist()


def _paged(size: Size):
  def run(model, params, prompts, new):
    engine = Engine(model, params, SamplingConfig(max_new_tokens=new), max_batch=len(prompts),
                    page_size=size.page_size, max_len=len(prompts[0]) + new)
    return engine.generate(prompts)
  return run


def run(size: str) -> list[dict]:
  cfg = SIZES[size]
  model, params = _model(cfg)
  rng = np.random.default_rng(0)
  prompts = rng.integers(0, cfg.vocab, (cfg.batch, cfg.prompt)).tolist()
  rows, reference = [], None
  for name, fn in (("no_cache", _no_cache), ("contiguous", _contiguous), ("paged", _paged(cfg))):
    fn(model, params, prompts, cfg.new)  # compile
    start = time.perf_counter()
    tokens = fn(model, params, prompts, cfg.new)
    seconds = time.perf_counter() - start
    reference = reference or tokens
    rows.append({"method": name, "platform": jax.default_backend(), "batch": cfg.batch,
                 "prompt": cfg.prompt, "new": cfg.new, "seconds": seconds,
                 "tokens_per_s": cfg.batch * cfg.new / seconds,
                 "same_tokens": tokens == reference})
  return rows
