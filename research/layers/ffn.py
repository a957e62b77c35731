"""Position-wise feed-forward network: dense (act(x W_in) W_out) or gated GLU variant.

Einsums: "BTD,DF->BTF" in, "BTF,FD->BTD" out. Gated activations (Shazeer 2020) use two
input matrices, `wi_gate` through the activation and `wi_up` linear, multiplied.
`ffn_dropout` drops hidden activations between the two projections (T5).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from research.layers import activations, init, linear


class MLP(nn.Module):
  cfg: object  # ModelConfig
  beta: float | None = None  # DeepNorm init gain

  @nn.compact
  def __call__(self, x_BTD: jax.Array, deterministic: bool = True) -> jax.Array:
    cfg = self.cfg
    d, f = cfg.d_model, cfg.ffn_hidden
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    act, gated = activations.get(cfg.activation)

    def dense(name, shape_in, shape_out, axes, role):
      return linear.Linear(
          shape_in, shape_out, axes, use_bias=cfg.mlp_bias,
          kernel_init=init.kernel_init(cfg, role, 1, self.beta), dtype=dtype, param_dtype=pdtype,
          name=name)

    if gated:
      hidden = act(dense("wi_gate", (d,), (f,), ("embed", "mlp"), "ffn_in")(x_BTD))
      hidden = hidden * dense("wi_up", (d,), (f,), ("embed", "mlp"), "ffn_in")(x_BTD)
    else:
      hidden = act(dense("wi", (d,), (f,), ("embed", "mlp"), "ffn_in")(x_BTD))
    self.sow("intermediates", "ffn_hidden", hidden)
    # T5 (Raffel et al. 2020) also drops on the hidden activations; ffn_dropout = 0 elsewhere.
    hidden = nn.Dropout(cfg.ffn_dropout)(hidden, deterministic=deterministic)
    out = dense("wo", (f,), (d,), ("mlp", "embed"), "ffn_out")(hidden)
    return checkpoint_name(out, "mlp_out")
