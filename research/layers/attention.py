"""Multi-head attention with grouped key/value heads (MHA when K == N, MQA when K == 1).

Projections: q "BTD,DNH->BTNH", k/v "BSD,DKH->BSKH", out "BTNH,NHD->BTD". The score
computation is delegated to the backend named by `cfg.attention_impl`. Cross-attention reads
its keys/values from `kv_BSD`; while decoding, from a `StaticKV` computed once.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from research.layers import attention_backends, init, linear
from research.layers import positions as pos_lib
from research.layers.kv_cache import LayerCache, StaticKV
from research.layers.masks import AttentionBias, AttentionMask
from research.layers.paged_kv_cache import PagedLayerCache


class Attention(nn.Module):
  cfg: object  # ModelConfig
  # DeepNorm init gain for the value/output projections (None unless deepnorm).
  beta: float | None = None
  # False for cross-attention, whose keys carry no rotary positions.
  self_attention: bool = True

  @nn.compact
  def __call__(
      self,
      x_BTD: jax.Array,
      mask: AttentionMask,
      bias: AttentionBias | None,
      positions_BT: jax.Array,
      cache: LayerCache | PagedLayerCache | StaticKV | None = None,
      deterministic: bool = True,
      kv_BSD: jax.Array | None = None,
  ) -> tuple[jax.Array, LayerCache | PagedLayerCache | StaticKV | None]:
    cfg = self.cfg
    d, n, k, h = cfg.d_model, cfg.n_heads, cfg.num_kv_heads, cfg.dim_per_head
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

    def proj(name, heads, axes, role):
      return linear.Linear(
          (d,), (heads, h), ("embed", axes, "head_dim"), use_bias=cfg.qkv_bias,
          kernel_init=init.kernel_init(cfg, role, 1, self.beta), dtype=dtype, param_dtype=pdtype,
          name=name)

    q = proj("q", n, "heads", "q")(x_BTD)
    if isinstance(cache, StaticKV):
      # Cross-attention while decoding: the encoder's keys/values were projected at prefill.
      k_new, v_new = cache.k, cache.v
    else:
      source = x_BTD if kv_BSD is None else kv_BSD
      k_new = proj("k", k, "kv_heads", "qk")(source)
      v_new = proj("v", k, "kv_heads", "v")(source)
      if cfg.position == "rope" and self.self_attention:
        q, k_new = pos_lib.rotate_queries_keys(cfg, q, k_new, positions_BT)

    rate = 0.0 if deterministic else cfg.attn_dropout
    backend = attention_backends.for_config(cfg)
    options = dict(
        scale=cfg.attn_scale if cfg.attn_scale is not None else h ** -0.5,
        dropout_rate=rate,
        dropout_rng=self.make_rng("dropout") if rate > 0.0 else None,
    )
    if cache is not None and not isinstance(cache, StaticKV):
      # Contiguous or paged (research.layers.kv_cache / paged_kv_cache): the cache writes
      # this step's keys/values and attends over everything written so far.
      cache, out_BTNH, probs = cache.attend(q, k_new, v_new, mask, bias, backend, **options)
    else:
      out_BTNH, probs = backend(q, k_new, v_new, mask, bias, **options)
    if probs is not None:
      self.sow("intermediates", "attention_probs", probs)
    out = linear.Linear(
        (n, h), (d,), ("heads", "head_dim", "embed"), use_bias=cfg.out_bias,
        kernel_init=init.kernel_init(cfg, "out", 2, self.beta), dtype=dtype, param_dtype=pdtype,
        name="o")(out_BTNH.astype(dtype))
    return checkpoint_name(out, "attn_out"), cache
