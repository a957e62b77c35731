"""Every attention backend equals `xla`, forward and backward, for every mask and bias.

`chunked` runs here directly; the Pallas kernels run in the Pallas interpreter (the same
kernel code, on CPU); `cudnn` needs an NVIDIA GPU and is only checked for its errors.
Block sizes (8, 16) do not divide the lengths (37 queries, 37 or 45 keys).
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.config import model as model_config
from research.layers import attention_backends, flash_attention, pallas_attention
from research.layers import positions as pos_lib
from research.layers.attention_errors import UnsupportedAttention
from research.layers.masks import AttentionBias, AttentionMask
from research.models import registry
from support import random_ids, tiny

B, T, N, H = 2, 37, 4, 8


def _case(name):
  """(mask, bias, kv_heads, key length, dropout rate) of a named combination."""
  s, k_heads, rate = T, 2, 0.0
  index = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  ones = jnp.ones((B, T), jnp.int32)
  left_pad = ones.at[1, :5].set(0)
  packed = jnp.concatenate([jnp.full((B, 15), 1), jnp.full((B, 15), 2), jnp.zeros((B, 7))], 1).astype(jnp.int32)
  mask = AttentionMask(q_index=index, k_index=index, q_segment=ones, k_segment=ones, aligned=True)
  bias = None
  table = jax.random.normal(jax.random.key(7), (32, N))
  slopes = jnp.asarray(pos_lib.alibi_slopes(N))
  if name == "causal_mha":
    k_heads = N
  elif name == "left_padding_mqa":
    mask, k_heads = mask.replace(q_segment=left_pad, k_segment=left_pad), 1
  elif name == "packed_segments":
    mask = mask.replace(q_segment=packed, k_segment=packed)
  elif name == "prefix_lm":
    mask = mask.replace(q_segment=left_pad, k_segment=left_pad, prefix_len=jnp.array([4, 11]))
  elif name == "sliding_window_packed":
    mask = mask.replace(q_segment=packed, k_segment=packed, window=6)
  elif name == "bidirectional_padding":
    mask = mask.replace(q_segment=left_pad, k_segment=left_pad, causal=False)
  elif name == "alibi":
    mask = mask.replace(q_segment=left_pad, k_segment=left_pad)
    bias = AttentionBias(q_pos=index, k_pos=index, alibi_slopes=slopes)
  elif name == "t5_causal_window":
    mask = mask.replace(window=9)
    bias = AttentionBias(q_pos=index, k_pos=index, rel_table=table, rel_max_distance=20)
  elif name == "t5_bidirectional_alibi":
    mask = mask.replace(causal=False, q_segment=packed, k_segment=packed)
    bias = AttentionBias(q_pos=index, k_pos=index, alibi_slopes=slopes, rel_table=table,
                         rel_bidirectional=True, rel_max_distance=20)
  elif name == "decode_cache":
    # 37 new tokens at slots 8..44 of a 45-slot cache whose first 8 slots hold a prompt
    # (row 1: 3 of them padding); no slot is empty at the end, so keys outnumber queries.
    s = 45
    k_index = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (B, s))
    k_segment = jnp.ones((B, s), jnp.int32).at[1, :3].set(0)
    mask = AttentionMask(q_index=index + 8, k_index=k_index, q_segment=ones, k_segment=k_segment)
    bias = AttentionBias(q_pos=index + 8, k_pos=k_index, alibi_slopes=slopes)
  elif name == "empty_cache_slots":
    # One query per row at slot 20 of a 45-slot cache: slots 21.. are empty (segment 0).
    s = 45
    k_index = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (B, s))
    k_segment = (k_index <= 20).astype(jnp.int32)
    mask = AttentionMask(q_index=index + 20, k_index=k_index, q_segment=ones, k_segment=k_segment)
  elif name == "dropout":
    mask, rate = mask.replace(q_segment=left_pad, k_segment=left_pad), 0.25
  else:
    raise KeyError(name)
  return mask, bias, k_heads, s, rate


CASES = ["causal_mha", "left_padding_mqa", "packed_segments", "prefix_lm", "sliding_window_packed",
         "bidirectional_padding", "alibi", "t5_causal_window", "t5_bidirectional_alibi",
         "decode_cache", "empty_cache_slots", "dropout"]


def _inputs(k_heads, s, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(ks[0], (B, T, N, H)), jax.random.normal(ks[1], (B, s, k_heads, H)),
          jax.random.normal(ks[2], (B, s, k_heads, H)))


def _value_and_grads(backend, mask, bias, q, k, v, rate):
  """Loss and its gradients wrt q, k, v and the bias' float leaves."""
  params = {} if bias is None else {n: getattr(bias, n) for n in ("alibi_slopes", "rel_table")
                                    if getattr(bias, n) is not None}
  weights = jnp.cos(jnp.arange(q.size, dtype=jnp.float32)).reshape(q.shape)

  def loss(q, k, v, params):
    b = None if bias is None else bias.replace(**params)
    out, _ = backend(q, k, v, mask, b, scale=0.3, dropout_rate=rate,
                     dropout_rng=jax.random.key(5) if rate else None)
    return jnp.sum(out * weights), out

  (value, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, params)
  return value, out, grads


def _assert_same(got, want):
  value, out, grads = got
  ref_value, ref_out, ref_grads = want
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-4)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=2e-5)
  assert len(jax.tree.leaves(grads)) == len(jax.tree.leaves(ref_grads))


def _chunked(*args, **kwargs):
  return flash_attention.chunked_attention(*args, block_q=8, block_k=16, **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_chunked_equals_xla_forward_and_backward(name):
  mask, bias, k_heads, s, rate = _case(name)
  q, k, v = _inputs(k_heads, s)
  _assert_same(_value_and_grads(_chunked, mask, bias, q, k, v, rate),
               _value_and_grads(attention_backends.xla_attention, mask, bias, q, k, v, rate))


def test_dropout_drops_and_depends_on_the_key():
  mask, _, k_heads, s, _ = _case("causal_mha")
  q, k, v = _inputs(k_heads, s)
  dropped = jax.jit(lambda key: _chunked(q, k, v, mask, None, scale=0.3, dropout_rate=0.5, dropout_rng=key)[0])
  plain = _chunked(q, k, v, mask, None, scale=0.3)[0]
  a, b = dropped(jax.random.key(1)), dropped(jax.random.key(2))
  assert not np.allclose(a, plain) and not np.allclose(a, b)
  _, probs = attention_backends.xla_attention(q, k, v, mask, None, scale=0.3, dropout_rate=0.5,
                                              dropout_rng=jax.random.key(1))
  kept = float(jnp.mean(probs[jnp.broadcast_to(mask.tile()[:, None], probs.shape)] > 0))
  assert 0.45 < kept < 0.55


# ------------------------------------------------------------------------- Pallas kernels

PALLAS_CASES = {
    # Triton mha: K/V per query head, causal or full, segment ids.
    "pallas_gpu": ["causal_mha"],
    # Splash: grouped heads, causal, windows, segments (sequence a multiple of 128).
    "pallas_tpu": ["packed_segments", "sliding_window_packed"],
}


@pytest.mark.parametrize("backend,name", [(b, c) for b, cs in PALLAS_CASES.items() for c in cs])
def test_pallas_kernels_in_the_interpreter_equal_xla(backend, name):
  length = 128 if backend == "pallas_tpu" else 64
  mask, _, k_heads, _, _ = _case(name)
  pad = length - T
  grow = lambda x: jnp.pad(x, ((0, 0), (0, pad)))  # noqa: E731  (new tokens: padding)
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (B, length))
  mask = mask.replace(q_index=index, k_index=index, q_segment=grow(mask.q_segment),
                      k_segment=grow(mask.k_segment))
  ks = jax.random.split(jax.random.key(1), 3)
  q = jax.random.normal(ks[0], (B, length, N, H))
  k, v = (jax.random.normal(x, (B, length, k_heads, H)) for x in ks[1:])
  fn = {"pallas_gpu": pallas_attention.pallas_gpu_attention,
        "pallas_tpu": pallas_attention.pallas_tpu_attention}[backend]
  kernel = lambda *a, **kw: fn(*a, interpret=True, block_q=32 if backend == "pallas_gpu" else 128,  # noqa: E731
                               block_k=32 if backend == "pallas_gpu" else 128, **kw)
  _assert_same(_value_and_grads(kernel, mask, None, q, k, v, 0.0),
               _value_and_grads(attention_backends.xla_attention, mask, None, q, k, v, 0.0))


def test_backends_name_what_they_cannot_express():
  mask, bias, k_heads, s, _ = _case("alibi")
  q, k, v = _inputs(k_heads, s)
  with pytest.raises(UnsupportedAttention, match="cuDNN needs an NVIDIA GPU.*'cpu'"):
    attention_backends.get("cudnn")(q, k, v, mask, None, scale=0.3)
  with pytest.raises(UnsupportedAttention, match="Pallas GPU kernels need a GPU"):
    attention_backends.get("pallas_gpu")(q, k, v, mask, None, scale=0.3)
  with pytest.raises(UnsupportedAttention, match="Pallas TPU kernels need a TPU"):
    attention_backends.get("pallas_tpu")(q, k, v, mask, None, scale=0.3)
  reason = lambda fn, m, b, **kw: fn(q, k, v, m, b, interpret=True, **kw)  # noqa: E731
  assert "ALiBi / T5" in reason(pallas_attention.gpu_unsupported, mask, bias)
  assert "n_kv_heads=2 != n_heads=4" in reason(pallas_attention.gpu_unsupported, mask, None)
  assert "not one fresh sequence" in reason(pallas_attention.tpu_unsupported, mask.replace(aligned=False), None)
  assert "prefix-LM" in reason(pallas_attention.tpu_unsupported, mask.replace(prefix_len=jnp.array([2, 2])), None)
  assert "attn_dropout=0.1" in reason(pallas_attention.tpu_unsupported, mask, None, dropout_rate=0.1)
  assert "multiple of 128" in reason(pallas_attention.tpu_unsupported, mask, None)


# ------------------------------------------------------------------------ memory, skipping


def _shapes(jaxpr):
  """Every intermediate shape of a jaxpr, including inside loops, conds and custom rules."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield tuple(getattr(var.aval, "shape", ()))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _shapes(inner)


def test_chunked_jaxpr_holds_no_length_squared_intermediate():
  length = 4096
  q = jax.ShapeDtypeStruct((1, length, 2, 8), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, length, 1, 8), jnp.float32)
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (1, length))
  mask = AttentionMask(q_index=index, k_index=index, q_segment=jnp.ones_like(index),
                       k_segment=jnp.ones_like(index), window=1000)
  bias = AttentionBias(q_pos=index, k_pos=index, rel_table=jnp.zeros((32, 2)))

  def grad_of(backend):
    def loss(q, k, v, table):
      return jnp.sum(backend(q, k, v, mask, bias.replace(rel_table=table), scale=0.1)[0])
    return jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2, 3)))(q, kv, kv, jnp.zeros((32, 2))).jaxpr

  def long_dims(shapes):
    return [s for s in shapes if sum(d >= length for d in s) >= 2]

  assert long_dims(_shapes(grad_of(attention_backends.xla_attention)))  # the probe sees L x L
  chunked = lambda *a, **kw: flash_attention.chunked_attention(*a, block_q=256, block_k=512, **kw)  # noqa: E731
  assert long_dims(_shapes(grad_of(chunked))) == []


def _self_mask(length, segment=None, **kw):
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (1, length))
  segment = jnp.ones_like(index) if segment is None else segment
  return AttentionMask(q_index=index, k_index=index, q_segment=segment, k_segment=segment, **kw)


def test_live_tiles_keep_exactly_the_tiles_masks_reach():
  tril = np.tril(np.ones((4, 4), bool))
  np.testing.assert_array_equal(_self_mask(64).live_tiles(16, 16), tril)
  np.testing.assert_array_equal(_self_mask(64, window=16).live_tiles(16, 16), tril & ~np.tril(tril, -2))
  docs = jnp.repeat(jnp.array([[1, 2]]), 32, axis=1)
  np.testing.assert_array_equal(_self_mask(64, docs).live_tiles(16, 16), tril & np.kron(np.eye(2), np.ones((2, 2))).astype(bool))
  prefix = _self_mask(64, prefix_len=jnp.array([20])).live_tiles(16, 16)
  np.testing.assert_array_equal(prefix, tril | (np.arange(4) <= 1)[None, :])
  assert _self_mask(64, causal=False).live_tiles(16, 16).all()
  # Each tile the mask reaches is kept: the live table covers every visible pair.
  for mask in (_self_mask(64, window=7), _self_mask(64, docs, prefix_len=jnp.array([9]))):
    reached = np.asarray(mask.tile()[0]).reshape(4, 16, 4, 16).any(axis=(1, 3))
    np.testing.assert_array_equal(mask.live_tiles(16, 16), reached)


def test_skipped_tiles_are_never_read():
  # NaN keys and values in the last key block poison every query that reads them, even with
  # zero weight (0 * NaN = NaN): only a backend that skips the tile keeps the others finite.
  mask = _self_mask(64)
  ks = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(ks[0], (1, 64, 4, 8))
  k, v = (jax.random.normal(x, (1, 64, 2, 8)).at[:, 48:].set(jnp.nan) for x in ks[1:])
  fn = jax.jit(lambda *a: flash_attention.chunked_attention(*a, mask, None, scale=0.3, block_q=16, block_k=16)[0])
  out = fn(q, k, v)
  assert np.isfinite(out[:, :48]).all() and np.isnan(out[:, 48:]).all()
  assert np.isnan(attention_backends.xla_attention(q, k, v, mask, None, scale=0.3)[0][:, :48]).all()
  dq = jax.grad(lambda q: jnp.sum(fn(q, k, v)[:, :48]))(q)
  assert np.isfinite(dq[:, :48]).all()


# -------------------------------------------------------------------------- auto, registry


def test_registry_and_config_agree():
  assert set(model_config.ATTENTION_IMPLS) == set(attention_backends.REGISTRY)
  with pytest.raises(ValueError, match="attention_impl='flash' is not allowed.*chunked"):
    tiny(attention_impl="flash")


def test_auto_picks_by_size_on_cpu_and_logs_once(caplog):
  mask, _, _, _, _ = _case("causal_mha")
  small = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)
  name, _ = attention_backends.auto_choice(small, small, small, mask, None)
  assert name == "xla"
  big = jax.ShapeDtypeStruct((8, 8192, 32, 64), jnp.bfloat16)
  name, why = attention_backends.auto_choice(big, big, big, mask, None)
  assert name == "chunked" and "xla: " in why
  q, k, v = _inputs(N, T)
  attention_backends._logged.clear()
  with caplog.at_level(logging.INFO, logger="research.layers.attention_backends"):
    for _ in range(3):
      out, _ = attention_backends.get("auto")(q, k, v, mask, None, scale=0.3, block_q=8, block_k=8)
  assert [r.getMessage() for r in caplog.records if "auto picked" in r.getMessage()] == [
      f"attention_impl=auto picked 'xla' (cpu, float32, B*N*T*S={B * N * T * T})"]
  np.testing.assert_allclose(out, attention_backends.xla_attention(q, k, v, mask, None, scale=0.3)[0])


# ------------------------------------------------------------------------------ full model

MODELS = {
    "llama_gqa_window": dict(n_kv_heads=2, sliding_window=5),
    "bloom_alibi": dict(position="alibi", embed_norm=True, n_kv_heads=1),
    "t5_bias": dict(position="t5"),
}


@pytest.mark.parametrize("name", MODELS)
def test_model_with_chunked_attention_equals_xla(name):
  cfg = tiny(**MODELS[name], attention_block_q=8, attention_block_k=16)
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((2, 21))
  segments = jnp.array([[1] * 12 + [2] * 9, [0] * 4 + [1] * 17])  # packed / left padded

  def run(impl):
    model = registry.build(cfg.replace(attention_impl=impl))

    def loss(p):
      logits = model.apply({"params": p}, input_ids=ids, segment_ids=segments)
      return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * (segments > 0)), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads

  logits, grads = run("chunked")
  ref_logits, ref_grads = run("xla")
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=2e-5)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
