"""Weight initialisers by role, so every family initialises the same way for the same config.

Roles: 'q', 'qk' (key), 'v' (value), 'out' (attention output), 'ffn_in', 'ffn_out', 'head'.
Default: normal(init_std), with GPT-2's 1/sqrt(2 n_layers) on the residual-output
projections when `scale_residual_init` (Radford et al. 2019, section 2.3).
`init_scheme="fan_in"` (Mesh TensorFlow's T5): N(0, 1/fan_in) for every kernel, and
N(0, 1/(fan_in * head_dim)) for the queries, which folds attention's 1/sqrt(d) into W_q for
a model with attn_scale=1.0.
DeepNorm (Wang et al. 2022, Algorithm 1): Xavier normal with gain beta on the value, output
and FFN weights, and gain 1 on query and key.
"""

from __future__ import annotations

import math

import jax

from research.layers import linear

_RESIDUAL_OUT = ("out", "ffn_out")
_DEEPNORM_SCALED = ("v", "out", "ffn_in", "ffn_out")


def kernel_init(cfg, role: str, in_dims: int, beta: float | None = None) -> linear.Initializer:
  """Initializer for a kernel of `role` whose first `in_dims` dims are contracted."""
  if cfg.norm_placement == "deepnorm" and role != "head":
    gain = beta if role in _DEEPNORM_SCALED else 1.0
    return linear.xavier_normal(gain, in_dims)
  if cfg.init_scheme == "fan_in":
    return _fan_in(in_dims, cfg.dim_per_head if role == "q" else 1)
  std = cfg.init_std
  if cfg.scale_residual_init and role in _RESIDUAL_OUT:
    std = std / (2 * cfg.n_layers) ** 0.5
  return linear.normal(std)


def _fan_in(in_dims: int, extra: int) -> linear.Initializer:
  def init_fn(key, shape, dtype=jax.numpy.float32):
    std = (math.prod(shape[:in_dims]) * extra) ** -0.5
    return std * jax.random.normal(key, shape, dtype)

  return init_fn
