"""`chunked`: blockwise online-softmax (flash) attention in pure JAX, with its own VJP.

Memory is O(L): queries are taken in blocks of `block_q`, keys in blocks of `block_k`, and
only one [B, N, block_q, block_k] tile of scores exists at a time. The forward pass keeps a
running row maximum m, normaliser l and unnormalised output per query block (Milakov &
Gimelshein 2018, "Online normalizer calculation for softmax"; FlashAttention, Dao et al.
2022, Algorithm 1). It saves only the output and the row log-sum-exp lse = m + log l; the
backward pass recomputes each tile's probabilities P = exp(S - lse) from them
(FlashAttention-2, Dao 2023, Algorithm 2):

    dV_j += P_ij^T dO_i      dP_ij = dO_i V_j^T      dS_ij = P_ij * (dP_ij - D_i)
    dQ_i += dS_ij K_j * scale      dK_j += dS_ij^T Q_i * scale      D_i = rowsum(dO_i * O_i)

Masks and biases come as compact descriptions (research.layers.masks): each tile is built
from per-token vectors, so no L x L tensor is formed. Tiles that `AttentionMask.live_tiles`
proves empty (above the causal diagonal, outside a sliding window, across packed segments,
over padding or empty cache slots) are skipped by a `lax.cond` in both passes. Grouped-query
heads are folded as [K, G] and contracted against the K key/value heads, never repeated.
Dropout uses the coordinate hash of research.layers.attention_dropout, so the backward pass
regenerates the forward's keep mask per tile and the result equals `xla` with the same key.

A query that may see no key at all (padding) gets a zero output, as in `xla`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from research.layers import attention_dropout
from research.layers.masks import AttentionBias, AttentionMask

DEFAULT_BLOCK_Q = 512
DEFAULT_BLOCK_K = 512


@dataclasses.dataclass(frozen=True)
class _Static:
  scale: float
  block_q: int
  block_k: int
  dropout_rate: float
  n_heads: int


def chunked_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    mask: AttentionMask,
    bias: AttentionBias | None,
    *,
    scale: float,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
) -> tuple[jax.Array, None]:
  """Softmax(q k^T * scale + bias) v one tile at a time; returns no probabilities."""
  b, t, n, h = q_BTNH.shape
  s, k_heads = k_BSKH.shape[1], k_BSKH.shape[2]
  # Blocks larger than the sequence would only add padding.
  bq, bk = min(block_q, t), min(block_k, s)
  t_pad, s_pad = -(-t // bq) * bq, -(-s // bk) * bk
  pad = lambda x, length: jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))  # noqa: E731
  q = pad(q_BTNH, t_pad).reshape(b, t_pad, k_heads, n // k_heads, h)
  k, v = pad(k_BSKH, s_pad), pad(v_BSKH, s_pad)
  mask = mask.pad(t_pad, s_pad)
  bias = bias.pad(t_pad, s_pad) if bias is not None and bias.active else None
  rate = float(dropout_rate) if dropout_rng is not None else 0.0
  seed = attention_dropout.seed_from_key(dropout_rng) if rate > 0.0 else None
  out = _flash(q, k, v, mask, bias, seed, _Static(float(scale), bq, bk, rate, n))
  return out[:, :t].reshape(b, t, n, h), None


# ------------------------------------------------------------------------------ one tile


def _tile_bias(params, bias: AttentionBias, t0, bq: int, s0, bk: int) -> jax.Array:
  """float32[B, N, bq, bk] bias of one tile, from the bias' float leaves `params`."""
  return bias.replace(**params).block(t0, bq, s0, bk).tile()


def _bias_params(bias: AttentionBias | None) -> dict:
  """The differentiable leaves of the bias (ALiBi slopes, the T5 table), by field name."""
  if bias is None:
    return {}
  return {name: getattr(bias, name) for name in ("alibi_slopes", "rel_table")
          if getattr(bias, name) is not None}


def _scores(q_i, k_j, mask, bias, params, t0, s0, st: _Static):
  """Scaled scores [B, K, G, bq, bk] (float32) of one tile and where they are visible."""
  b, bq, k_heads, g, _ = q_i.shape
  bk = k_j.shape[1]
  s = jnp.einsum("BTKGH,BSKH->BKGTS", q_i, k_j, preferred_element_type=jnp.float32) * st.scale
  if bias is not None:
    s = s + _tile_bias(params, bias, t0, bq, s0, bk).reshape(b, k_heads, g, bq, bk)
  visible = mask.block(t0, bq, s0, bk).tile()[:, None, None]
  return s, visible


def _keep(seed, st: _Static, shape_BKGTS, t0, s0):
  b, k_heads, g, bq, bk = shape_BKGTS
  keep = attention_dropout.keep_mask(seed, st.dropout_rate, (b, st.n_heads, bq, bk), t0, s0)
  return keep.reshape(shape_BKGTS)


def _slice(x, start, size: int, axis: int):
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


# ------------------------------------------------------------------------------- forward


def _forward(q, k, v, mask, bias, seed, st: _Static):
  """(out [B, T, K, G, H] in v's dtype, lse float32[B, K, G, T])."""
  b, t_pad, k_heads, g, h = q.shape
  nq, nk = t_pad // st.block_q, k.shape[1] // st.block_k
  bq, bk = st.block_q, st.block_k
  live = mask.live_tiles(bq, bk)
  params = _bias_params(bias)

  def query_block(i):
    t0 = i * bq
    q_i = _slice(q, t0, bq, 1)

    def tile(j, carry):
      m, l, acc = carry
      s0 = j * bk
      k_j, v_j = _slice(k, s0, bk, 1), _slice(v, s0, bk, 1)
      s, visible = _scores(q_i, k_j, mask, bias, params, t0, s0, st)
      s = jnp.where(visible, s, -jnp.inf)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      # A row that has seen no visible key keeps m = -inf; shift it by 0 instead, so its
      # probabilities are exp(-inf) = 0 rather than NaN.
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.exp(s - m_safe[..., None])
      correction = jnp.exp(m - m_safe)
      l = l * correction + jnp.sum(p, axis=-1)
      if st.dropout_rate > 0.0:
        keep = _keep(seed, st, p.shape, t0, s0)
        p = jnp.where(keep, p / (1.0 - st.dropout_rate), 0.0)
      pv = jnp.einsum("BKGTS,BSKH->BKGTH", p.astype(v.dtype), v_j, preferred_element_type=jnp.float32)
      return m_new, l, acc * correction[..., None] + pv

    def maybe_tile(j, carry):
      return jax.lax.cond(live[i, j], functools.partial(tile, j), lambda c: c, carry)

    init = (jnp.full((b, k_heads, g, bq), -jnp.inf, jnp.float32),
            jnp.zeros((b, k_heads, g, bq), jnp.float32),
            jnp.zeros((b, k_heads, g, bq, h), jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, nk, maybe_tile, init)
    seen = l != 0.0  # NaN stays NaN: a poisoned input must not turn into zeros
    out = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0)
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)
    return jnp.einsum("BKGTH->BTKGH", out).astype(v.dtype), lse

  outs, lses = jax.lax.map(query_block, jnp.arange(nq))  # [nq, B, bq, K, G, H], [nq, B, K, G, bq]
  out = jnp.moveaxis(outs, 0, 1).reshape(b, t_pad, k_heads, g, h)
  lse = jnp.moveaxis(lses, 0, 3).reshape(b, k_heads, g, t_pad)
  return out, lse


# ------------------------------------------------------------------------------ backward


def _backward(st: _Static, residuals, d_out):
  q, k, v, mask, bias, seed, out, lse = residuals
  b, t_pad, k_heads, g, h = q.shape
  s_pad = k.shape[1]
  bq, bk = st.block_q, st.block_k
  nq, nk = t_pad // bq, s_pad // bk
  live = mask.live_tiles(bq, bk)
  params = _bias_params(bias)
  # D_i = rowsum(dO_i * O_i) (FlashAttention-2, eq. in section 3.1.2), [B, K, G, T].
  delta = jnp.einsum("BTKGH,BTKGH->BKGT", d_out.astype(jnp.float32), out.astype(jnp.float32))
  lse_safe = jnp.where(jnp.isfinite(lse), lse, 0.0)

  def key_block(carry, j):
    dq, d_params = carry
    s0 = j * bk
    k_j, v_j = _slice(k, s0, bk, 1), _slice(v, s0, bk, 1)

    def tile(i, inner):
      dk_j, dv_j, dq, d_params = inner
      t0 = i * bq
      q_i, do_i = _slice(q, t0, bq, 1), _slice(d_out, t0, bq, 1)
      lse_i, delta_i = _slice(lse_safe, t0, bq, 3), _slice(delta, t0, bq, 3)

      def scores(p_bias):
        return _scores(q_i, k_j, mask, bias, p_bias, t0, s0, st)[0]

      if params:
        s, bias_vjp = jax.vjp(scores, params)
      else:
        s, bias_vjp = scores(params), None
      visible = mask.block(t0, bq, s0, bk).tile()[:, None, None]
      p = jnp.where(visible, jnp.exp(s - lse_i[..., None]), 0.0)
      dp = jnp.einsum("BTKGH,BSKH->BKGTS", do_i, v_j, preferred_element_type=jnp.float32)
      if st.dropout_rate > 0.0:
        keep = _keep(seed, st, p.shape, t0, s0)
        p_kept = jnp.where(keep, p / (1.0 - st.dropout_rate), 0.0)
        dp = jnp.where(keep, dp / (1.0 - st.dropout_rate), 0.0)
      else:
        p_kept = p
      dv_j = dv_j + jnp.einsum("BKGTS,BTKGH->BSKH", p_kept.astype(do_i.dtype), do_i,
                               preferred_element_type=jnp.float32)
      ds = p * (dp - delta_i[..., None])
      dq_i = jnp.einsum("BKGTS,BSKH->BTKGH", ds, k_j, preferred_element_type=jnp.float32) * st.scale
      dq = jax.lax.dynamic_update_slice_in_dim(dq, _slice(dq, t0, bq, 1) + dq_i, t0, axis=1)
      dk_j = dk_j + jnp.einsum("BKGTS,BTKGH->BSKH", ds, q_i, preferred_element_type=jnp.float32) * st.scale
      if bias_vjp is not None:
        # The scores are s = qk * scale + bias, so the bias receives dS itself.
        (d_tile,) = bias_vjp(ds)
        d_params = jax.tree.map(jnp.add, d_params, d_tile)
      return dk_j, dv_j, dq, d_params

    def maybe_tile(i, inner):
      return jax.lax.cond(live[i, j], functools.partial(tile, i), lambda c: c, inner)

    zeros_kv = jnp.zeros((b, bk, k_heads, h), jnp.float32)
    dk_j, dv_j, dq, d_params = jax.lax.fori_loop(0, nq, maybe_tile, (zeros_kv, zeros_kv, dq, d_params))
    return (dq, d_params), (dk_j, dv_j)

  init = (jnp.zeros(q.shape, jnp.float32), jax.tree.map(jnp.zeros_like, params))
  (dq, d_params), (dks, dvs) = jax.lax.scan(key_block, init, jnp.arange(nk))
  dk = jnp.moveaxis(dks, 0, 1).reshape(k.shape)
  dv = jnp.moveaxis(dvs, 0, 1).reshape(v.shape)
  d_bias = None
  if bias is not None:
    d_bias = bias.replace(q_pos=None, k_pos=None, **{
        name: d_params[name].astype(getattr(bias, name).dtype) for name in d_params})
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, d_bias, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash(q, k, v, mask, bias, seed, st: _Static):
  return _forward(q, k, v, mask, bias, seed, st)[0]


def _flash_fwd(q, k, v, mask, bias, seed, st: _Static):
  out, lse = _forward(q, k, v, mask, bias, seed, st)
  return out, (q, k, v, mask, bias, seed, out, lse)


_flash.defvjp(_flash_fwd, _backward)
