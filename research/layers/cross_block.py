"""The decoder block of an encoder-decoder: self-attention, cross-attention over the encoder
output, then the FFN (Vaswani et al. 2017, section 3.1; T5, Raffel et al. 2020). Each of the
three sub-layers f is wrapped by `norm_placement` as in research.layers.block:

  pre       x + f(norm(x))                      (T5)
  post      norm(x + f(x))                      (Vaswani et al. 2017)
  sandwich  x + norm_out(f(norm_in(x)))         (CogView, Ding et al. 2021)
  deepnorm  norm(alpha * x + f(x))              (DeepNet, Wang et al. 2022: the decoder's alpha)

Cross-attention has no position bias and no rotary positions: its keys are encoder tokens.
While decoding, the layer's cache holds its own keys/values (`LayerCache`) and the encoder's
projected once (`StaticKV`), so a step never re-projects the encoder output.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax

from research.layers import norms
from research.layers.attention import Attention
from research.layers.block import ACTIVATION_AXES
from research.layers.ffn import MLP
from research.layers.kv_cache import LayerCache, StaticKV
from research.layers.masks import AttentionBias, AttentionMask
from research.layers.moe import MoE


@flax.struct.dataclass
class CrossContext:
  """What every decoder block reads besides its input: the encoder side."""

  # The encoder output [B, S, D]; None once the cache holds every layer's StaticKV.
  encoded: jax.Array | None
  # Decoder queries x encoder keys: padding and packed segments (causal=False).
  mask: AttentionMask


@flax.struct.dataclass
class CrossBlockCache:
  """One decoder layer's cache: its own keys/values, and the encoder's (a LayerCache of S slots
  at prefill, written once; a StaticKV afterwards)."""

  self_attn: LayerCache
  cross: LayerCache | StaticKV


class CrossBlock(nn.Module):
  cfg: object  # ModelConfig
  # DeepNorm (alpha, beta) of the decoder stack (ModelConfig.deepnorm_encdec()[1]).
  deepnorm: tuple[float, float] | None = None
  moe: bool = False

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      mask: AttentionMask,
      bias: AttentionBias | None,
      positions: jax.Array,
      cache: CrossBlockCache | None = None,
      deterministic: bool = True,
      context: CrossContext | None = None,
  ) -> tuple[jax.Array, CrossBlockCache | None]:
    if context is None:
      raise ValueError("CrossBlock needs a CrossContext (the encoder output and its mask)")
    cfg = self.cfg
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    placement = cfg.norm_placement
    alpha, beta = self.deepnorm if placement == "deepnorm" else (1.0, None)
    self_attn = Attention(cfg, beta=beta, name="attn")
    cross_attn = Attention(cfg, beta=beta, self_attention=False, name="cross_attn")
    if self.moe:
      # Padding queries (segment 0) take no expert capacity and stay out of the router losses.
      moe = MoE(cfg, beta=beta, name="moe")
      mlp = lambda h: moe(h, deterministic, valid_BT=mask.q_segment != 0)
    else:
      mlp_module = MLP(cfg, beta=beta, name="mlp")
      mlp = lambda h: mlp_module(h, deterministic)

    sublayers = {
        "attn": lambda h: self_attn(
            h, mask, bias, positions, None if cache is None else cache.self_attn, deterministic),
        "cross": lambda h: cross_attn(
            h, context.mask, None, positions, None if cache is None else cache.cross,
            deterministic, kv_BSD=context.encoded),
        "mlp": lambda h: (mlp(h), None),
    }

    def drop(y):
      return nn.Dropout(cfg.resid_dropout)(y, deterministic=deterministic)

    def norm(name):
      return norms.make_norm(cfg, name)

    new_cache = {}
    for name, sublayer in sublayers.items():
      if placement == "pre":
        out, new_cache[name] = sublayer(norm(f"{name}_norm")(x))
        x = x + drop(out)
      elif placement == "sandwich":
        out, new_cache[name] = sublayer(norm(f"{name}_norm")(x))
        x = x + norm(f"{name}_out_norm")(drop(out))
      else:  # post, deepnorm (alpha = 1 for post)
        out, new_cache[name] = sublayer(x)
        x = norm(f"{name}_norm")(alpha * x + drop(out))
    self.sow("intermediates", "residual", x)
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    if cache is None:
      return x, None
    return x, CrossBlockCache(self_attn=new_cache["attn"], cross=new_cache["cross"])
