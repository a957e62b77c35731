"""Attention backends: compiled peak memory and time of forward+backward over sequence length.

For each length L and each backend the platform has (cpu: xla, chunked; gpu: + cudnn,
pallas_gpu; tpu: + pallas_tpu), jit the gradient of a causal self-attention wrt q, k, v,
read the compiled executable's `memory_analysis()` (arguments + outputs + temporaries: what
XLA will allocate, without running it), then time the call when that fits in `max_gib`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp

from research.layers import attention_backends
from research.layers.attention_errors import UnsupportedAttention
from research.layers.masks import AttentionMask


@dataclasses.dataclass(frozen=True)
class Size:
  lengths: tuple[int, ...]
  batch: int
  heads: int
  kv_heads: int
  head_dim: int
  block: int
  dtype: str
  repeats: int
  max_gib: float  # do not execute configurations whose compiled peak exceeds this


SIZES = {
    "tiny": Size((128, 256), 1, 2, 1, 16, 64, "float32", 1, 1.0),
    "cpu": Size((1024, 2048, 4096, 8192, 16384), 1, 4, 2, 64, 512, "float32", 2, 3.0),
    "full": Size((1024, 2048, 4096, 8192, 16384, 32768), 1, 16, 8, 128, 512, "bfloat16", 5, 60.0),
}
BACKENDS = {"cpu": ("xla", "chunked"), "gpu": ("xla", "chunked", "cudnn", "pallas_gpu"),
            "tpu": ("xla", "chunked", "pallas_tpu")}
NOTES = ("peak_mib: compiled memory_analysis() of jit(grad) (arguments + outputs + temporaries); "
         "ms: median wall time of forward+backward; causal mask.")


def _inputs(size: Size, length: int):
  dtype = jnp.dtype(size.dtype)
  ks = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(ks[0], (size.batch, length, size.heads, size.head_dim), dtype)
  k, v = (jax.random.normal(x, (size.batch, length, size.kv_heads, size.head_dim), dtype) for x in ks[1:])
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (size.batch, length))
  mask = AttentionMask(q_index=index, k_index=index, q_segment=jnp.ones_like(index),
                       k_segment=jnp.ones_like(index), causal=True, aligned=True)
  return q, k, v, mask


def _grad_fn(name: str, size: Size, mask: AttentionMask):
  entry = attention_backends.REGISTRY[name]
  options = {opt: size.block for opt, _ in entry.options}

  def loss(q, k, v):
    out, _ = entry.fn(q, k, v, mask, None, scale=size.head_dim ** -0.5, **options)
    return jnp.sum(out.astype(jnp.float32))

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def run(size: str) -> list[dict]:
  cfg = SIZES[size]
  platform = jax.default_backend()
  rows = []
  for length in cfg.lengths:
    q, k, v, mask = _inputs(cfg, length)
    for name in BACKENDS.get(platform, ("xla", "chunked")):
      row = {"backend": name, "L": length, "platform": platform, "dtype": cfg.dtype}
      reason = attention_backends.REGISTRY[name].unsupported(q, k, v, mask, None, block_q=cfg.block,
                                                             block_k=cfg.block)
      if reason is not None:
        rows.append({**row, "peak_mib": None, "ms": None, "note": f"unsupported: {reason}"})
        continue
      fn = _grad_fn(name, cfg, mask)
      try:
        compiled = fn.lower(q, k, v).compile()
      except UnsupportedAttention as err:
        rows.append({**row, "peak_mib": None, "ms": None, "note": str(err)})
        continue
      mem = compiled.memory_analysis()
      peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
              - mem.alias_size_in_bytes)
      row["peak_mib"] = peak / 2 ** 20
      if peak > cfg.max_gib * 2 ** 30:
        rows.append({**row, "ms": None, "note": f"not run: needs more than {cfg.max_gib} GiB"})
        continue
      jax.block_until_ready(compiled(q, k, v))  # warm-up
      times = []
      for _ in range(cfg.repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(q, k, v))
        times.append(time.perf_counter() - start)
      rows.append({**row, "ms": 1e3 * statistics.median(times), "note": ""})
  return rows
