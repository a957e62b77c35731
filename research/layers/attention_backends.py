"""Attention backends behind one signature, chosen by `ModelConfig.attention_impl`.

    backend(q_BTNH, k_BSKH, v_BSKH, mask, bias, *, scale, dropout_rate, dropout_rng)
        -> (out_BTNH, probs_BNTS or None)

K/V keep their K heads: grouped-query attention reshapes the N query heads into K groups
of G = N / K instead of repeating K/V in memory. Every backend gives a query that may see
no key (padding) a zero output, and drops the same entries for the same dropout key
(research.layers.attention_dropout), so backends agree wherever both can run.

| name         | file                          | where                      |
|--------------|-------------------------------|----------------------------|
| `xla`        | here                          | anywhere; [B, N, T, S] scores |
| `chunked`    | flash_attention.py            | anywhere; O(L) memory      |
| `cudnn`      | cudnn_attention.py            | NVIDIA GPUs, fp16/bf16     |
| `pallas_gpu` | pallas_attention.py           | GPUs (Triton)              |
| `pallas_tpu` | pallas_attention.py           | TPUs (splash attention)    |
| `auto`       | here: picks one of the above per call, by platform, dtype, shape and mask |

A backend that cannot express a mask, bias or dropout raises `UnsupportedAttention` naming
it; `auto` asks each candidate's `unsupported(...)` first and never picks one that would.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp

from research.layers import attention_dropout, cudnn_attention, flash_attention, pallas_attention
from research.layers.attention_errors import UnsupportedAttention
from research.layers.masks import MASK_VALUE, AttentionBias, AttentionMask

log = logging.getLogger(__name__)

Backend = Callable[..., tuple[jax.Array, jax.Array | None]]

__all__ = ["REGISTRY", "UnsupportedAttention", "for_config", "get", "xla_attention"]


def xla_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    mask: AttentionMask,
    bias: AttentionBias | None,
    *,
    scale: float,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Softmax(q k^T * scale + bias) v, materialising the [B, N, T, S] scores."""
  b, t, n, h = q_BTNH.shape
  k_heads = k_BSKH.shape[2]
  q_BTKGH = q_BTNH.reshape(b, t, k_heads, n // k_heads, h)
  scores = jnp.einsum(
      "BTKGH,BSKH->BKGTS", q_BTKGH, k_BSKH, preferred_element_type=jnp.float32) * scale
  if bias is not None and bias.active:
    scores = scores + bias.tile().reshape(b, k_heads, n // k_heads, t, -1)
  visible = mask.tile()[:, None, None]
  scores = jnp.where(visible, scores, MASK_VALUE)
  # A row with no visible key (a padding query) gets zero weights, not a uniform softmax.
  probs = jnp.where(jnp.any(visible, axis=-1, keepdims=True), jax.nn.softmax(scores, axis=-1), 0.0)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = attention_dropout.keep_mask(
        attention_dropout.seed_from_key(dropout_rng), dropout_rate, (b, n, t, k_BSKH.shape[1]))
    probs = jnp.where(keep.reshape(probs.shape), probs / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("BKGTS,BSKH->BTKGH", probs.astype(v_BSKH.dtype), v_BSKH)
  return out.reshape(b, t, n, h), probs.reshape(b, n, t, -1)


def _xla_unsupported(*args, **kwargs) -> str | None:
  return None


@dataclasses.dataclass(frozen=True)
class Entry:
  """A backend, the reason it cannot run a call (None: it can), and the ModelConfig fields
  it takes as keyword options (option name -> config field)."""

  fn: Backend
  unsupported: Callable[..., str | None]
  options: tuple[tuple[str, str], ...] = ()


_BLOCKS = (("block_q", "attention_block_q"), ("block_k", "attention_block_k"))

REGISTRY: dict[str, Entry] = {
    "xla": Entry(xla_attention, _xla_unsupported),
    "chunked": Entry(flash_attention.chunked_attention, _xla_unsupported, _BLOCKS),
    "cudnn": Entry(cudnn_attention.cudnn_attention, cudnn_attention.unsupported),
    "pallas_gpu": Entry(pallas_attention.pallas_gpu_attention, pallas_attention.gpu_unsupported,
                        _BLOCKS),
    "pallas_tpu": Entry(pallas_attention.pallas_tpu_attention, pallas_attention.tpu_unsupported,
                        _BLOCKS),
}

# ---------------------------------------------------------------------------------- auto

# Above this many score entries per call (B * N * T * S), `auto` prefers O(L)-memory
# backends on CPU: 2^26 float32 scores are 256 MiB, and the backward holds several such.
AUTO_XLA_MAX_SCORES = 2 ** 26
# Preference order per platform; the first candidate that supports the call wins.
AUTO_ORDER = {
    "gpu": ("cudnn", "pallas_gpu", "chunked", "xla"),
    "tpu": ("pallas_tpu", "chunked", "xla"),
    "cpu": ("xla", "chunked"),
}
_logged: set[tuple[str, str]] = set()


def auto_choice(q_BTNH, k_BSKH, v_BSKH, mask, bias, *, dropout_rate: float = 0.0,
                **options) -> tuple[str, str]:
  """(backend name, why) that `auto` runs for a call with these shapes, mask and bias."""
  platform = jax.default_backend()
  order = AUTO_ORDER.get(platform, ("chunked", "xla"))
  b, t, n, _ = q_BTNH.shape
  scores = b * n * t * k_BSKH.shape[1]
  skipped = []
  for name in order:
    if name == "xla" and platform == "cpu" and scores > AUTO_XLA_MAX_SCORES:
      skipped.append(f"xla: {scores} scores > {AUTO_XLA_MAX_SCORES}")
      continue
    reason = REGISTRY[name].unsupported(
        q_BTNH, k_BSKH, v_BSKH, mask, bias, dropout_rate=dropout_rate, **options)
    if reason is None:
      why = f"{platform}, {q_BTNH.dtype}, B*N*T*S={scores}"
      return name, why + ("; passed over " + "; ".join(skipped) if skipped else "")
    skipped.append(f"{name}: {reason}")
  return "chunked", f"{platform}: no preferred backend fits ({'; '.join(skipped)})"


def auto_attention(q_BTNH, k_BSKH, v_BSKH, mask, bias, *, scale, dropout_rate=0.0,
                   dropout_rng=None, **options):
  """Runs the backend `auto_choice` picks; logs each distinct choice once per process."""
  name, why = auto_choice(q_BTNH, k_BSKH, v_BSKH, mask, bias, dropout_rate=dropout_rate, **options)
  if (name, why) not in _logged:
    _logged.add((name, why))
    log.info("attention_impl=auto picked %r (%s)", name, why)
  fn = REGISTRY[name].fn
  accepted = {opt for opt, _ in REGISTRY[name].options}
  return fn(q_BTNH, k_BSKH, v_BSKH, mask, bias, scale=scale, dropout_rate=dropout_rate,
            dropout_rng=dropout_rng, **{k: v for k, v in options.items() if k in accepted})


REGISTRY["auto"] = Entry(auto_attention, _xla_unsupported, _BLOCKS)


def get(name: str) -> Backend:
  if name not in REGISTRY:
    raise ValueError(f"attention_impl={name!r} is not one of: {', '.join(REGISTRY)}")
  return REGISTRY[name].fn


def for_config(cfg) -> Backend:
  """The backend `cfg.attention_impl` names, with its options (block sizes) from `cfg`."""
  get(cfg.attention_impl)  # raises for an unknown name, listing the choices
  entry = REGISTRY[cfg.attention_impl]
  options = {opt: getattr(cfg, field) for opt, field in entry.options}
  return functools.partial(entry.fn, **options) if options else entry.fn
