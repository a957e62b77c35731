"""`pallas_gpu` and `pallas_tpu`: the flash-attention kernels of jax.experimental.pallas.ops.

  pallas_gpu  `pallas.ops.gpu.attention.mha` (Triton): causal or full self-attention with
              segment ids; K/V per query head (n_kv_heads == n_heads), no bias, no window.
  pallas_tpu  `pallas.ops.tpu.splash_attention` (Mosaic): causal, sliding window or full
              self-attention with segment ids, grouped-query heads natively; no bias.

Both build their causal and window masks from static shapes (top-left diagonal), so they
run only on `aligned` masks (queries and keys one fresh sequence: training and prefill
without a cache), and neither has dropout or prefix-LM. Each case they cannot express
raises `UnsupportedAttention` naming it. The kernels' own segment masks let padding
(segment 0) attend to padding; those rows are zeroed afterwards, as every backend does.
The imports are guarded: a jax without these modules only makes the backends unsupported.
`interpret=True` runs a kernel in the Pallas interpreter on any platform (for tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from research.layers.attention_errors import UnsupportedAttention
from research.layers.masks import AttentionBias, AttentionMask

try:
  from jax.experimental.pallas.ops.gpu import attention as _gpu
except Exception as err:  # noqa: BLE001  (any import failure only disables the backend)
  _gpu, _GPU_IMPORT_ERROR = None, err
try:
  from jax.experimental.pallas.ops.tpu import splash_attention as _splash
except Exception as err:  # noqa: BLE001
  _splash, _TPU_IMPORT_ERROR = None, err

# Splash's key blocks must be multiples of the TPU lane width.
_TPU_LANES = 128


def _pow2_block(length: int, limit: int, smallest: int) -> int | None:
  """The largest power of two in [smallest, limit] dividing `length`, or None."""
  block = 1 << (max(limit, 1).bit_length() - 1)
  while block >= smallest:
    if length % block == 0:
      return block
    block //= 2
  return None


def _common_reasons(platform: str, interpret: bool, mask: AttentionMask, bias, dropout_rate):
  if not interpret and jax.default_backend() != platform:
    return f"Pallas {platform.upper()} kernels need a {platform.upper()}; the default JAX backend is {jax.default_backend()!r}"
  if not mask.aligned:
    return ("queries and keys are not one fresh sequence (cached decoding, cross-attention, "
            "or a mask built without aligned=True); the kernel's masks are static")
  if mask.prefix_len is not None:
    return "a prefix-LM mask (prefix_len)"
  if bias is not None and bias.active:
    return "an ALiBi / T5 relative-position bias (position='alibi'/'t5')"
  if dropout_rate > 0.0:
    return f"attn_dropout={dropout_rate}"
  return None


def _zero_padding_rows(out_BTNH, mask: AttentionMask):
  return jnp.where((mask.q_segment != 0)[:, :, None, None], out_BTNH, 0).astype(out_BTNH.dtype)


# ------------------------------------------------------------------------------ GPU: mha


def gpu_unsupported(q_BTNH, k_BSKH, v_BSKH, mask, bias, *, dropout_rate=0.0, interpret=False,
                    block_q=128, block_k=128, **_) -> str | None:
  if _gpu is None:
    return f"jax.experimental.pallas.ops.gpu.attention does not import ({_GPU_IMPORT_ERROR})"
  reason = _common_reasons("gpu", interpret, mask, bias, dropout_rate)
  if reason:
    return reason
  n, k_heads = q_BTNH.shape[2], k_BSKH.shape[2]
  if k_heads != n:
    return (f"n_kv_heads={k_heads} != n_heads={n}: the Triton kernel reads K/V per query head, "
            "so grouped-query K/V would have to be repeated in memory")
  if mask.window is not None:
    return f"sliding_window={mask.window}"
  t = q_BTNH.shape[1]
  if _pow2_block(t, min(block_q, block_k), 16) is None:
    return f"sequence length {t} has no power-of-two block >= 16 dividing it"
  return None


def pallas_gpu_attention(q_BTNH, k_BSKH, v_BSKH, mask: AttentionMask, bias: AttentionBias | None,
                         *, scale: float, dropout_rate: float = 0.0, dropout_rng=None,
                         block_q: int = 128, block_k: int = 128, interpret: bool = False):
  reason = gpu_unsupported(q_BTNH, k_BSKH, v_BSKH, mask, bias, dropout_rate=dropout_rate,
                           interpret=interpret, block_q=block_q, block_k=block_k)
  if reason is not None:
    raise UnsupportedAttention("pallas_gpu", reason)
  block = _pow2_block(q_BTNH.shape[1], min(block_q, block_k), 16)
  small = min(block, 32)  # the kernel's default backward tiles
  sizes = _gpu.BlockSizes(block_q=block, block_k=block, block_q_dkv=small, block_kv_dkv=small,
                          block_q_dq=small, block_kv_dq=small)
  out = _gpu.mha(q_BTNH, k_BSKH, v_BSKH, mask.q_segment, sm_scale=scale, causal=mask.causal,
                 block_sizes=sizes, interpret=interpret)
  return _zero_padding_rows(out, mask), None


# ----------------------------------------------------------------------- TPU: splash


def tpu_unsupported(q_BTNH, k_BSKH, v_BSKH, mask, bias, *, dropout_rate=0.0, interpret=False,
                    block_q=512, block_k=512, **_) -> str | None:
  if _splash is None:
    return f"jax.experimental.pallas.ops.tpu.splash_attention does not import ({_TPU_IMPORT_ERROR})"
  reason = _common_reasons("tpu", interpret, mask, bias, dropout_rate)
  if reason:
    return reason
  t = q_BTNH.shape[1]
  if _pow2_block(t, max(block_q, _TPU_LANES), _TPU_LANES) is None:
    return f"sequence length {t} is not a multiple of {_TPU_LANES} (splash's key block)"
  return None


@functools.lru_cache(maxsize=64)
def _splash_kernel(length: int, heads: int, causal: bool, window: int | None, block: int,
                   interpret: bool):
  shape = (length, length)
  if window is not None:
    # Our window: a query sees keys with q - k < window (and k <= q when causal).
    base = _splash.LocalMask(shape, (window - 1, 0 if causal else None), 0)
  elif causal:
    base = _splash.CausalMask(shape)
  else:
    base = _splash.FullMask(shape)
  sizes = _splash.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
      block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  return _splash.make_splash_mha(
      _splash.MultiHeadMask([base] * heads), head_shards=1, q_seq_shards=1, block_sizes=sizes,
      interpret=interpret)


def pallas_tpu_attention(q_BTNH, k_BSKH, v_BSKH, mask: AttentionMask, bias: AttentionBias | None,
                         *, scale: float, dropout_rate: float = 0.0, dropout_rng=None,
                         block_q: int = 512, block_k: int = 512, interpret: bool = False):
  reason = tpu_unsupported(q_BTNH, k_BSKH, v_BSKH, mask, bias, dropout_rate=dropout_rate,
                           interpret=interpret, block_q=block_q, block_k=block_k)
  if reason is not None:
    raise UnsupportedAttention("pallas_tpu", reason)
  _, t, n, _ = q_BTNH.shape
  block = _pow2_block(t, max(min(block_q, block_k), _TPU_LANES), _TPU_LANES)
  kernel = _splash_kernel(t, n, mask.causal, mask.window, block, interpret)
  # Splash does not scale the scores; it takes heads first ([N, T, H] per sequence) and
  # grouped-query K/V with their K heads.
  to_heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
  q = to_heads_first(q_BTNH * jnp.asarray(scale, q_BTNH.dtype))
  segments = _splash.SegmentIds(q=mask.q_segment, kv=mask.k_segment)
  out = jax.vmap(kernel)(q, to_heads_first(k_BSKH), to_heads_first(v_BSKH), segments)
  return _zero_padding_rows(to_heads_first(out), mask), None
