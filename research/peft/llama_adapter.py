"""LLaMA-Adapter (Zhang et al. 2023): adaption prompts with zero-initialised attention gating.

In each of the top `peft.adapter_layers` layers, a learned prompt P_l of `peft.num_tokens`
vectors of width d_model is projected by the layer's own (frozen) key and value projections.
Every query attends to it through a softmax of its own, scaled by a learned per-head gate g_l
(Zhang et al. 2023, eq. 8):

    S_g = [softmax(q K_P^T / sqrt(H)) * g_l ; softmax(q K^T / sqrt(H))]

so the layer's output is the base attention's plus o(g_l softmax(q K_P^T) V_P). The gates
start at zero: the adapted model starts as the base model exactly, and the prompt's influence
grows as the gates learn. Queries carry their rotary positions; the prompt carries none.
Parameters: `attn/adaption_prompt` [P, D] and `attn/adaption_gate` [N], float32.

Under a scanned stack every layer has the parameters (one program for all layers); the lower
layers' are fixed at zero (a zero gate adds exactly nothing) and only the top layers' are
trained, saved and counted.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.layers import linear
from research.layers import positions as pos_lib
from research.layers.attention import Attention
from research.peft import core

PROMPT, GATE = "adaption_prompt", "adaption_gate"


def _project(x, params, name):
  """x @ kernel (+ bias) of one of the attention's projections."""
  kernel = params[name]["kernel"]
  y = jnp.tensordot(x, kernel.astype(x.dtype), axes=1)
  if "bias" in params[name]:
    y = y + params[name]["bias"].astype(x.dtype)
  return y


@dataclasses.dataclass(frozen=True)
class LlamaAdapter(core.Method):

  def intercept(self, next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, Attention):
      return next_fun(*args, **kwargs)
    call = core.bind_call(module, "__call__", args, kwargs)
    out, cache = next_fun(*args, **kwargs)
    if call.arguments["kv_BSD"] is not None or not module.self_attention:
      return out, cache  # self-attention only
    cfg = module.cfg
    n, k, h = cfg.n_heads, cfg.num_kv_heads, cfg.dim_per_head
    prompt = module.param(PROMPT, nn.with_logical_partitioning(
        linear.normal(self.cfg.init_std), ("virtual_tokens", "embed")),
        (self.cfg.num_tokens, cfg.d_model), jnp.float32)
    gate = module.param(GATE, nn.with_logical_partitioning(nn.initializers.zeros, ("heads",)),
                        (n,), jnp.float32)
    params = nn.unbox(module.variables["params"])
    x = call.arguments["x_BTD"].astype(jnp.float32)
    q = _project(x, params, "q")
    if cfg.position == "rope":
      q = pos_lib.apply_rope(q, call.arguments["positions_BT"], pos_lib.rope_inv_freq(cfg))
    k_p, v_p = _project(prompt, params, "k"), _project(prompt, params, "v")  # [P, K, H]
    b, t = q.shape[:2]
    scale = cfg.attn_scale if cfg.attn_scale is not None else h ** -0.5
    scores = jnp.einsum("BTKGH,PKH->BKGTP", q.reshape(b, t, k, n // k, h), k_p) * scale
    # Zhang et al. 2023, eq. 8: the prompt's own softmax, gated per head.
    probs = jax.nn.softmax(scores, axis=-1) * gate.reshape(1, k, n // k, 1, 1)
    heads = jnp.einsum("BKGTP,PKH->BTKGH", probs, v_p).reshape(b, t, n, h)
    delta = jnp.einsum("BTNH,NHD->BTD", heads, params["o"]["kernel"].astype(jnp.float32))
    return out + delta.astype(out.dtype), cache

  # Training form: the top layers' prompts and gates only.
  def _selection(self, peft):
    """path -> (rows of the leading layers axis to train, or a bool for a looped layer)."""
    tree = nn.unbox(peft.adapter_boxed)
    out = {}
    for path, leaf in core.flat(tree).items():
      depth, number = core.layer_numbers(tree, path, leaf)
      top = depth - self.cfg.adapter_layers
      out[path] = np.flatnonzero(np.asarray(number) >= top) if np.ndim(number) else number >= top
    return out

  def init_trainable(self, peft, rng):
    full = core.flat(super().init_trainable(peft, rng))
    picked = {}
    for path, rows in self._selection(peft).items():
      if isinstance(rows, np.ndarray):
        leaf = full[path]
        picked[path] = leaf.replace_boxed(leaf.value[rows]) if isinstance(leaf, nn.Partitioned) else leaf[rows]
      elif rows:
        picked[path] = full[path]
    return core.nested(picked)

  def to_model(self, peft, trainable):
    trained = core.flat(trainable)
    out = {}
    for (path, shape), rows in zip(sorted(core.flat(nn.unbox(peft.adapter_boxed)).items()),
                                   (r for _, r in sorted(self._selection(peft).items()))):
      zeros = jnp.zeros(shape.shape, shape.dtype)
      if isinstance(rows, np.ndarray):
        out[path] = zeros.at[rows].set(trained[path].astype(shape.dtype))
      else:
        out[path] = trained[path] if rows else zeros
    return core.nested(out)
