"""The transformer block: attention and FFN sub-layers, arranged by `norm_placement`.

  pre       x + f(norm(x))                      (GPT-2, LLaMA; Xiong et al. 2020)
  post      norm(x + f(x))                      (Vaswani et al. 2017, BERT)
  sandwich  x + norm_out(f(norm_in(x)))         (CogView, Ding et al. 2021)
  deepnorm  norm(alpha * x + f(x))              (DeepNet, Wang et al. 2022), beta-scaled init

With `parallel_block` the attention and FFN read the same input and their outputs are
summed into one residual (GPT-J, PaLM, Falcon, GPT-NeoX), from one shared norm or two.
With `moe=True` the FFN is a mixture of experts (research.layers.moe) in every placement.
`shared_attn` / `shared_mlp` put a sub-layer owned by the caller in place of the block's own,
for cross-layer sharing (ALBERT, research.layers.shared_stack).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from research.layers import norms
from research.layers.attention import Attention
from research.layers.ffn import MLP
from research.layers.kv_cache import LayerCache
from research.layers.masks import AttentionBias, AttentionMask
from research.layers.moe import MoE


# The residual stream's logical axes; the rules put batch on the data axes and, with sequence
# parallelism, length on `tensor`. Activations are constrained here, at block boundaries only.
ACTIVATION_AXES = ("act_batch", "act_length", "act_embed")


class Block(nn.Module):
  cfg: object  # ModelConfig
  # DeepNorm (alpha, beta) for this stack; the owner computes them (decoder, encoder, ...).
  deepnorm: tuple[float, float] | None = None
  moe: bool = False
  # Sub-layers owned (and shared across blocks) by the caller; None: the block's own.
  shared_attn: nn.Module | None = None
  shared_mlp: nn.Module | None = None

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      mask: AttentionMask,
      bias: AttentionBias | None,
      positions: jax.Array,
      cache: LayerCache | None = None,
      deterministic: bool = True,
  ) -> tuple[jax.Array, LayerCache | None]:
    cfg = self.cfg
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    placement = cfg.norm_placement
    alpha, beta = self.deepnorm if placement == "deepnorm" else (1.0, None)
    attn = self.shared_attn if self.shared_attn is not None else Attention(cfg, beta=beta, name="attn")
    if self.shared_mlp is not None:
      mlp = self.shared_mlp
    elif self.moe:
      # Padding queries (segment 0) take no expert capacity and stay out of the router losses.
      moe = MoE(cfg, beta=beta, name="moe")
      mlp = lambda h, det: moe(h, det, valid_BT=mask.q_segment != 0)
    else:
      mlp = MLP(cfg, beta=beta, name="mlp")

    def drop(y):
      return nn.Dropout(cfg.resid_dropout)(y, deterministic=deterministic)

    def attend(h):
      out, new_cache = attn(h, mask, bias, positions, cache, deterministic)
      return drop(out), new_cache

    def norm(name):
      return norms.make_norm(cfg, name)

    if cfg.parallel_block:
      if placement == "pre":
        h_attn = norm("attn_norm")(x)
        h_mlp = h_attn if cfg.parallel_norms == 1 else norm("mlp_norm")(x)
        a, cache = attend(h_attn)
        y = x + a + drop(mlp(h_mlp, deterministic))
      else:  # post
        a, cache = attend(x)
        y = norm("attn_norm")(x + a + drop(mlp(x, deterministic)))
    elif placement == "pre":
      a, cache = attend(norm("attn_norm")(x))
      h = x + a
      y = h + drop(mlp(norm("mlp_norm")(h), deterministic))
    elif placement == "sandwich":
      a, cache = attend(norm("attn_norm")(x))
      h = x + norm("attn_out_norm")(a)
      y = h + norm("mlp_out_norm")(drop(mlp(norm("mlp_norm")(h), deterministic)))
    else:  # post, deepnorm (alpha = 1 for post)
      a, cache = attend(x)
      h = norm("attn_norm")(alpha * x + a)
      y = norm("mlp_norm")(alpha * h + drop(mlp(h, deterministic)))
    self.sow("intermediates", "residual", y)
    return nn.with_logical_constraint(y, ACTIVATION_AXES), cache
