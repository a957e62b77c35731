"""`cudnn`: cuDNN's fused flash attention through jax.nn.dot_product_attention.

What the installed `jax.nn.dot_product_attention(implementation="cudnn")` can express, and
how each of our masks reaches it:

  causal            `is_causal=True` (cuDNN's top-left diagonal), only when the mask is
                    `aligned` (queries and keys are one fresh sequence); cuDNN then skips
                    the upper triangle
  sliding window    `local_window_size=(window - 1, 0)` with the aligned causal mask
  padding, packed segments, prefix-LM, cached decoding
                    a dense boolean mask [B, 1, T, S] built by `AttentionMask.tile()`: cuDNN
                    adds it as a bias, so this costs B*T*S bf16 values of memory (not O(L))
  GQA / MQA         natively (K key/value heads)

It cannot take ALiBi or T5 relative biases except as a dense [B, N, T, S] tensor (more
memory than the `xla` scores it would replace), has no dropout in this API, and needs
float16/bfloat16 inputs on an NVIDIA GPU; each raises `UnsupportedAttention` naming it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from research.layers.attention_errors import UnsupportedAttention
from research.layers.masks import AttentionBias, AttentionMask

NAME = "cudnn"
DTYPES = (jnp.float16, jnp.bfloat16)


def _nvidia_gpu() -> bool:
  try:
    devices = jax.devices()
  except RuntimeError:
    return False
  if not devices or devices[0].platform != "gpu":
    return False
  kind = getattr(devices[0], "device_kind", "")
  version = getattr(getattr(devices[0], "client", None), "platform_version", "")
  return "nvidia" in kind.lower() or "cuda" in str(version).lower()


def unsupported(q_BTNH, k_BSKH, v_BSKH, mask: AttentionMask, bias: AttentionBias | None, *,
                dropout_rate: float = 0.0, **_) -> str | None:
  """Why this call cannot run on cuDNN, or None if it can."""
  if jax.default_backend() != "gpu" or not _nvidia_gpu():
    return f"cuDNN needs an NVIDIA GPU; the default JAX backend is {jax.default_backend()!r}"
  if q_BTNH.dtype not in DTYPES:
    return f"dtype={q_BTNH.dtype}: cuDNN flash attention takes float16 or bfloat16 (set dtype)"
  if bias is not None and bias.active:
    return ("an ALiBi / T5 relative-position bias (position='alibi'/'t5') reaches cuDNN only "
            "as a dense [B, N, T, S] tensor")
  if dropout_rate > 0.0:
    return f"attn_dropout={dropout_rate}: jax.nn.dot_product_attention has no dropout"
  h = q_BTNH.shape[-1]
  if h % 8 or h > 256:
    return f"head_dim={h}: cuDNN needs a multiple of 8, at most 256 (128 before Hopper)"
  return None


def cudnn_attention(q_BTNH, k_BSKH, v_BSKH, mask: AttentionMask, bias: AttentionBias | None, *,
                    scale: float, dropout_rate: float = 0.0, dropout_rng=None):
  reason = unsupported(q_BTNH, k_BSKH, v_BSKH, mask, bias, dropout_rate=dropout_rate)
  if reason is not None:
    raise UnsupportedAttention(NAME, reason)
  native_causal = mask.aligned and mask.causal and mask.prefix_len is None
  visible = mask.tile()[:, None]  # [B, 1, T, S]
  window = None
  if native_causal and mask.window is not None:
    window = (mask.window - 1, 0)
  out = jax.nn.dot_product_attention(
      q_BTNH, k_BSKH, v_BSKH, mask=visible, scale=scale, is_causal=native_causal,
      local_window_size=window, implementation="cudnn")
  # Rows that see no key come out as cuDNN's uniform average; every backend returns zeros.
  seen = jnp.any(visible[:, 0], axis=-1)[:, :, None, None]
  return jnp.where(seen, out, 0).astype(v_BSKH.dtype), None
