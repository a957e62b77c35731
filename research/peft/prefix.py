"""Prefix tuning (Li & Liang 2021): learned keys and values that every attention layer attends to.

Each attention module gets `peft.num_tokens` key/value vectors per K/V head, placed before the
real keys: visible to every real query of every packed segment, without positions or
position biases (zero ALiBi / T5 bias), as in a KV cache holding a prompt that was never
typed. In the model form they are `attn/prefix_k` and `attn/prefix_v`, [P, K, H] per layer.

Training reparameterises them (Li & Liang 2021, sec. 4.3: optimising the prefix directly is
unstable): P_theta = MLP(P'), with P' a [P, d_model] embedding and the MLP
d_model -> prefix_hidden -> (every layer's keys and values), tanh in between (the reference
PEFT library's prefix encoder). After training only the prefix itself is kept
(`Peft.export`); `peft.prefix_projection=false` trains it directly.

Decoding works: the interceptor wraps the layer's KV cache so the prefix comes before the
cached keys.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from research.layers import linear
from research.layers.attention import Attention
from research.layers.kv_cache import LayerCache
from research.layers.masks import AttentionBias, AttentionMask
from research.peft import core

K_NAME, V_NAME = "prefix_k", "prefix_v"
ENCODER = "prefix_encoder"
# k_segment of the prefix keys: no real segment has it, so `tile` tells them apart.
PREFIX_SEGMENT = -1


@flax.struct.dataclass
class PrefixedMask(AttentionMask):
  """The mask of a layer whose keys start with a prefix: prefix keys (k_segment == -1) are
  visible to every non-padding query; the rest as the wrapped mask says."""

  def tile(self, q_slice: slice | None = None, k_slice: slice | None = None) -> jax.Array:
    ok = super().tile(q_slice, k_slice)
    qs = self.q_segment[:, q_slice or slice(None), None]
    ks = self.k_segment[:, None, k_slice or slice(None)]
    return ok | ((ks == PREFIX_SEGMENT) & (qs != 0))


def prefixed_mask(mask: AttentionMask, n: int) -> PrefixedMask:
  b = mask.k_index.shape[0]
  pad = lambda x, value: jnp.concatenate([jnp.full((b, n), value, x.dtype), x], axis=1)  # noqa: E731
  return PrefixedMask(
      q_index=mask.q_index, k_index=pad(mask.k_index, -1), q_segment=mask.q_segment,
      k_segment=pad(mask.k_segment, PREFIX_SEGMENT), prefix_len=mask.prefix_len,
      causal=mask.causal, window=mask.window)


@flax.struct.dataclass
class PrefixedBias(AttentionBias):
  """A position bias over [prefix; keys]: zero on the prefix keys."""

  n_prefix: int = flax.struct.field(pytree_node=False, default=0)

  def tile(self, q_slice: slice | None = None, k_slice: slice | None = None) -> jax.Array:
    inner = super().tile(q_slice, None)
    zeros = jnp.zeros((*inner.shape[:-1], self.n_prefix), inner.dtype)
    return jnp.concatenate([zeros, inner], axis=-1)[..., k_slice or slice(None)]


@flax.struct.dataclass
class PrefixCache:
  """Stands in for a layer's KV cache: `update` returns [prefix; keys so far]. `inner` is the
  real cache when decoding, None in a plain forward."""

  prefix_k: jax.Array  # [P, K, H]
  prefix_v: jax.Array
  inner: LayerCache | None

  def update(self, k_BTKH, v_BTKH):
    inner, k_all, v_all = (None, k_BTKH, v_BTKH) if self.inner is None else self.inner.update(k_BTKH, v_BTKH)
    b = k_all.shape[0]
    pk = jnp.broadcast_to(self.prefix_k.astype(k_all.dtype), (b, *self.prefix_k.shape))
    pv = jnp.broadcast_to(self.prefix_v.astype(v_all.dtype), (b, *self.prefix_v.shape))
    return (self.replace(inner=inner), jnp.concatenate([pk, k_all], axis=1),
            jnp.concatenate([pv, v_all], axis=1))

  def attend(self, q_BTNH, k_BTKH, v_BTKH, mask, bias, backend, **kwargs):
    """The layer-cache interface attention calls: the prefix, then the keys so far."""
    cache, k_all, v_all = self.update(k_BTKH, v_BTKH)
    out, probs = backend(q_BTNH, k_all, v_all, mask, bias, **kwargs)
    return cache, out, probs


@dataclasses.dataclass(frozen=True)
class PrefixTuning(core.Method):

  def intercept(self, next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, Attention):
      return next_fun(*args, **kwargs)
    cfg, n = module.cfg, self.cfg.num_tokens
    shape = (n, cfg.num_kv_heads, cfg.dim_per_head)
    init = nn.with_logical_partitioning(linear.normal(self.cfg.init_std),
                                        ("virtual_tokens", "kv_heads", "head_dim"))
    prefix_k = module.param(K_NAME, init, shape, jnp.float32)
    prefix_v = module.param(V_NAME, init, shape, jnp.float32)
    call = core.bind_call(module, "__call__", args, kwargs)
    values = call.arguments
    cache = values["cache"]
    values["mask"] = prefixed_mask(values["mask"], n)
    if values["bias"] is not None:
      bias = values["bias"]
      values["bias"] = PrefixedBias(**{f.name: getattr(bias, f.name) for f in dataclasses.fields(bias)},
                                    n_prefix=n)
    values["cache"] = PrefixCache(prefix_k, prefix_v, cache)
    out, new_cache = core.call_bound(next_fun, call)
    return out, None if cache is None else new_cache.inner

  # Training form: with prefix_projection, an embedding and an MLP that make every prefix.
  def _leaves(self, peft):
    return sorted(core.flat(nn.unbox(peft.adapter_boxed)).items())

  def _width(self, peft) -> int:
    return sum(math.prod(leaf.shape) // self.cfg.num_tokens for _, leaf in self._leaves(peft))

  def init_trainable(self, peft, rng):
    if not self.cfg.prefix_projection:
      return super().init_trainable(peft, rng)
    d, hidden, width = peft.model.cfg.d_model, self.cfg.prefix_hidden, self._width(peft)
    keys = jax.random.split(rng, 3)
    box = lambda value, names: nn.Partitioned(value, names)  # noqa: E731
    return {ENCODER: {
        "embedding": box(self.cfg.init_std * jax.random.normal(keys[0], (self.cfg.num_tokens, d)),
                         ("virtual_tokens", "embed")),
        "hidden": {"kernel": box(jax.random.normal(keys[1], (d, hidden)) / math.sqrt(d), ("embed", "mlp")),
                   "bias": box(jnp.zeros((hidden,)), ("mlp",))},
        "out": {"kernel": box(self.cfg.init_std * jax.random.normal(keys[2], (hidden, width)), ("mlp", None)),
                "bias": box(jnp.zeros((width,)), (None,))},
    }}

  def to_model(self, peft, trainable):
    if ENCODER not in trainable:
      return trainable  # the model form itself (no projection, or an exported prefix)
    enc = trainable[ENCODER]
    h = jnp.tanh(enc["embedding"] @ enc["hidden"]["kernel"] + enc["hidden"]["bias"])
    flat_prefix = h @ enc["out"]["kernel"] + enc["out"]["bias"]  # [P, every layer's K and V]
    out, start = {}, 0
    for path, leaf in self._leaves(peft):
      size = math.prod(leaf.shape) // self.cfg.num_tokens
      part = flat_prefix[:, start:start + size]
      start += size
      # leaf: [*lead, P, K, H] (lead: the scanned layers axis, if any)
      lead = leaf.shape[:-3]
      value = part.reshape(self.cfg.num_tokens, *lead, *leaf.shape[-2:])
      out[path] = jnp.moveaxis(value, 0, len(lead)).astype(leaf.dtype)
    return core.nested(out)

  def export(self, peft, trainable):
    return self.to_model(peft, trainable)
