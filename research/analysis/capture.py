"""Intermediates of a forward pass, per layer, from what the modules `sow`.

    trace = capture(model, params, input_ids)
    trace.residual          [L, B, T, D]  each block's output (the residual stream)
    trace.stream            [L+1, B, T, D] the embeddings, then each block's output
    trace.attention_probs   [L, B, N, T, S]
    trace.ffn_hidden        L entries of [B, T, F] (None for mixture-of-experts layers)
    trace.logits            [B, T, V]

The blocks sow `residual`, attention sows `attention_probs` (when its backend materialises
them), the dense FFN `ffn_hidden` (the activation, times the up projection for GLU
variants), into Flax's "intermediates" collection; the embedding output comes from Flax's
`capture_intermediates`. Scanned, looped and `moe_every`-grouped stacks are all put back in
layer order.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Trace:
  cfg: Any  # ModelConfig
  input_ids: np.ndarray  # [B, T]
  valid: np.ndarray  # bool[B, T]: real (non-padding) tokens
  embeddings: np.ndarray  # [B, T, D]: the first block's input
  residual: np.ndarray  # [L, B, T, D]
  attention_probs: np.ndarray | None  # [L, B, N, T, S]
  ffn_hidden: tuple[np.ndarray | None, ...]  # per layer [B, T, F]; None where the FFN is an MoE
  final_hidden: np.ndarray  # [B, T, D]: after the final norm (if any), before the unembedding
  logits: np.ndarray  # [B, T, V]
  raw: Any  # the whole "intermediates" collection, as Flax returned it

  @property
  def stream(self) -> np.ndarray:
    """[L+1, B, T, D]: the embeddings followed by every block's output."""
    return np.concatenate([self.embeddings[None], self.residual], axis=0)

  @property
  def n_layers(self) -> int:
    return self.residual.shape[0]


def _strip_sow(tree):
  """Sown values are tuples (one entry per call); each is called once per layer here."""
  return jax.tree.map(lambda t: t[0], tree, is_leaf=lambda x: isinstance(x, tuple))


def _numbered(tree: dict, prefix: str) -> list:
  keys = sorted((int(k[len(prefix):]), k) for k in tree if k.startswith(prefix))
  return [tree[k] for _, k in keys]


def per_layer(blocks: dict) -> list[dict]:
  """The stack's intermediates as one dict per layer, in layer order.

  Scanned stacks stack every leaf on a leading layer (or group) axis under `layers`; looped
  ones use `layers_{i}`; with `moe_every` = k the unit is a group holding `block_0..k-1`.
  """

  def split_group(unit) -> list:
    groups = _numbered(unit, "block_")
    return groups if groups else [unit]

  if "layers" in blocks:
    unit = blocks["layers"]
    count = jax.tree.leaves(unit)[0].shape[0]
    return [jax.tree.map(lambda a, g=g: a[g], block) for g in range(count)
            for block in split_group(unit)]
  return [block for unit in _numbered(blocks, "layers_") for block in split_group(unit)]


@functools.lru_cache(maxsize=16)
def _apply(model):
  def run(params, input_ids, attention_mask, segment_ids):
    return model.apply(
        {"params": params}, input_ids=input_ids, attention_mask=attention_mask,
        segment_ids=segment_ids, mutable=["intermediates"],
        capture_intermediates=lambda mdl, method: mdl.name == "embed" and method == "__call__")

  return jax.jit(run)


def capture(model, params, input_ids, attention_mask=None, segment_ids=None) -> Trace:
  """Runs the model once (jitted, deterministic) and returns its intermediates."""
  input_ids = jnp.asarray(input_ids, jnp.int32)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  logits, state = _apply(model)(params, input_ids, jnp.asarray(attention_mask, jnp.int32),
                                None if segment_ids is None else jnp.asarray(segment_ids, jnp.int32))
  raw = jax.device_get(state["intermediates"])
  tree = _strip_sow(raw)
  layers = per_layer(tree["blocks"])
  probs = [layer.get("attn", {}).get("attention_probs") for layer in layers]
  return Trace(
      cfg=model.cfg,
      input_ids=np.asarray(input_ids),
      valid=np.asarray(attention_mask).astype(bool),
      embeddings=np.asarray(tree["embed"]["__call__"]),
      residual=np.stack([np.asarray(layer["residual"]) for layer in layers]),
      attention_probs=None if any(p is None for p in probs) else np.stack(probs),
      ffn_hidden=tuple(None if "mlp" not in layer else np.asarray(layer["mlp"]["ffn_hidden"])
                       for layer in layers),
      final_hidden=np.asarray(tree["final_hidden"]),
      logits=np.asarray(jax.device_get(logits)),
      raw=raw,
  )
