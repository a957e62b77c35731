"""Measurements taken after a sweep point has trained, by name.

    measure(config, run_dir, **args) -> {column: number | str | None}

Each reads the run's final checkpoint and returns flat columns for the results table
(`eval_loss@256`, `kv_cache_bytes_per_token`, ...). A value that cannot be measured is None
with the reason in a `*_note` column, never a made-up number: a learned position table has
no entry past its length, so `eval_at_lengths` records None there.

`check(name, config, args)` runs before anything trains and returns the problems it sees,
so a bad measurement argument is reported with every other invalid point.
"""

from __future__ import annotations

import inspect
import math
import pathlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research import data, pretrained
from research.config.experiment import ExperimentConfig
from research.inference.generate import generate
from research.inference.sampling import SamplingConfig
from research.layers.kv_cache import KVCache
from research.models import registry
from research.train import objectives
from research.train.step import make_eval_step

MeasureFn = Callable[..., dict[str, Any]]
MEASURES: dict[str, MeasureFn] = {}
CHECKS: dict[str, Callable[..., list[str]]] = {}


def register(name: str, check: Callable[..., list[str]] | None = None):
  def wrap(fn: MeasureFn) -> MeasureFn:
    MEASURES[name] = fn
    if check is not None:
      CHECKS[name] = check
    return fn

  return wrap


def check(name: str, config: ExperimentConfig, args: dict[str, Any]) -> list[str]:
  """Problems with measuring `name` with `args` on `config` (empty when it will run)."""
  if name not in MEASURES:
    return [f"unknown measure {name!r}; known: {', '.join(sorted(MEASURES))}"]
  try:
    inspect.signature(MEASURES[name]).bind(config, pathlib.Path("."), **args)
  except TypeError as err:
    return [f"measure {name!r}: {err}"]
  return CHECKS[name](config, **args) if name in CHECKS else []


def run(name: str, config: ExperimentConfig, run_dir: str | pathlib.Path,
        args: dict[str, Any]) -> dict[str, Any]:
  return MEASURES[name](config, pathlib.Path(run_dir), **args)


def _inference_model(model_cfg, max_len: int | None = None):
  """The model for evaluation: never pipelined; a longer max_seq_len where the positions
  allow it (only a learned table depends on it, and then it is never raised)."""
  model_cfg = model_cfg.replace(pipeline_stages=1, pipeline_microbatches=1)
  if max_len is not None and model_cfg.position != "learned" and max_len > model_cfg.max_seq_len:
    model_cfg = model_cfg.replace(max_seq_len=max_len)
  return registry.build(model_cfg)


# ---------------------------------------------------------------- loss at other lengths


def evaluate_at_length(config: ExperimentConfig, params, length: int, *, tokens: int,
                       batch_tokens: int) -> float:
  """Mean validation loss over about `tokens` validation tokens in windows of `length`.

  The windows tile the start of the validation split in order, so every length scores
  (nearly) the same tokens, each with up to `length - 1` tokens of context: the protocol
  of Press et al. (2021, section 4) for non-overlapping evaluation.
  """
  rows = max(1, batch_tokens // length)
  dataset = data.build(config.data.replace(seq_len=length, batch_size=rows))
  model = _inference_model(config.effective_model(), length)
  objective = objectives.get(config.train.objective)
  step = jax.jit(make_eval_step(model, objective.loss))
  totals = None
  for batch in dataset.eval_batches(max_batches=max(1, math.ceil(tokens / (rows * length)))):
    if objective.prepare is not None:
      batch = objective.prepare(batch, tokenizer=dataset.tokenizer, config=config, epoch=0)
    sums = step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  return float(totals["loss"] / max(float(totals["weight"]), 1.0))


def _check_lengths(config, multipliers=(1, 2, 4, 8), tokens=32768, batch_tokens=8192):
  problems = []
  if not multipliers or any(not isinstance(m, int) or m < 1 for m in multipliers):
    problems.append(f"eval_at_lengths: multipliers={tuple(multipliers)!r} must be positive integers")
  if tokens < 1 or batch_tokens < 1:
    problems.append(f"eval_at_lengths: tokens={tokens} and batch_tokens={batch_tokens} must be >= 1")
  return problems


@register("eval_at_lengths", check=_check_lengths)
def eval_at_lengths(config: ExperimentConfig, run_dir: pathlib.Path, *,
                    multipliers=(1, 2, 4, 8), tokens: int = 32768,
                    batch_tokens: int = 8192) -> dict[str, Any]:
  """`eval_loss@L` for L = train length x each multiplier (length extrapolation)."""
  _, _, params = pretrained.restore(run_dir)
  model_cfg = config.effective_model()
  out: dict[str, Any] = {}
  notes = []
  for m in multipliers:
    length = config.data.seq_len * m
    if model_cfg.position == "learned" and length > model_cfg.max_seq_len:
      out[f"eval_loss@{length}"] = None
      notes.append(f"learned positions have no entry past {model_cfg.max_seq_len}")
      continue
    out[f"eval_loss@{length}"] = evaluate_at_length(
        config, params, length, tokens=tokens, batch_tokens=batch_tokens)
  out["eval_lengths_note"] = "; ".join(sorted(set(notes))) or None
  return out


# ----------------------------------------------------------------- KV cache and decoding


def kv_cache_bytes_per_token(model_cfg) -> int:
  """Bytes the KV cache holds per sequence position: 2 (K and V) x layers x K heads x head dim
  x the compute dtype's size, read from the cache's own shapes."""
  shapes = jax.eval_shape(lambda: KVCache.init(model_cfg, 1, 1))
  return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in (shapes.k, shapes.v)))


def _seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _check_decode(config, batch=8, prompt_len=16, new_tokens=64, repeats=3):
  problems = []
  for name, value in (("batch", batch), ("prompt_len", prompt_len), ("repeats", repeats)):
    if value < 1:
      problems.append(f"kv_cache_decode: {name}={value} must be >= 1")
  if new_tokens < 2:
    problems.append(f"kv_cache_decode: new_tokens={new_tokens} must be >= 2")
  model = config.effective_model()
  if model.position == "learned" and prompt_len + new_tokens > model.max_seq_len:
    problems.append(f"kv_cache_decode: prompt_len + new_tokens = {prompt_len + new_tokens} exceeds "
                    f"the learned position table (model.max_seq_len={model.max_seq_len})")
  return problems


@register("kv_cache_decode", check=_check_decode)
def kv_cache_decode(config: ExperimentConfig, run_dir: pathlib.Path, *, batch: int = 8,
                    prompt_len: int = 16, new_tokens: int = 64, repeats: int = 3) -> dict[str, Any]:
  """KV-cache bytes per token and cached greedy decoding speed (median of `repeats`).

  Decode time is the time of a prefill plus `new_tokens` tokens minus the time of the
  prefill plus one, so it counts the `new_tokens - 1` cached steps only.
  """
  _, _, params = pretrained.restore(run_dir)
  model_cfg = config.effective_model()
  model = _inference_model(model_cfg)
  ids = np.random.default_rng(0).integers(3, model_cfg.vocab_size, (batch, prompt_len)).astype(np.int32)

  def run_for(n):
    sampling = SamplingConfig(max_new_tokens=n, temperature=0.0, pad_id=0)
    return lambda: generate(model, params, ids, sampling=sampling)

  decode_s = max(_seconds(run_for(new_tokens), repeats) - _seconds(run_for(1), repeats), 1e-9)
  per_token = kv_cache_bytes_per_token(model_cfg)
  return {
      "kv_cache_bytes_per_token": per_token,
      "decode_tokens_per_s": batch * (new_tokens - 1) / decode_s,
      "decode_ms_per_step": 1e3 * decode_s / (new_tokens - 1),
  }
