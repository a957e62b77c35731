"""Weight initialisers by role, so every family initialises the same way for the same config.

Roles: 'qk' (query/key), 'v' (value), 'out' (attention output), 'ffn_in', 'ffn_out'.
Default: normal(init_std), with GPT-2's 1/sqrt(2 n_layers) on the residual-output
projections when `scale_residual_init` (Radford et al. 2019, section 2.3).
DeepNorm (Wang et al. 2022, Algorithm 1): Xavier normal with gain beta on the value, output
and FFN weights, and gain 1 on query and key.
"""

from __future__ import annotations

from research.layers import linear

_RESIDUAL_OUT = ("out", "ffn_out")
_DEEPNORM_SCALED = ("v", "out", "ffn_in", "ffn_out")


def kernel_init(cfg, role: str, in_dims: int, beta: float | None = None) -> linear.Initializer:
  """Initializer for a kernel of `role` whose first `in_dims` dims are contracted."""
  if cfg.norm_placement == "deepnorm":
    gain = beta if role in _DEEPNORM_SCALED else 1.0
    return linear.xavier_normal(gain, in_dims)
  std = cfg.init_std
  if cfg.scale_residual_init and role in _RESIDUAL_OUT:
    std = std / (2 * cfg.n_layers) ** 0.5
  return linear.normal(std)
