"""Prompt tuning (Lester et al. 2021): a learned soft prompt prepended to the input.

The root module's call gets `peft.num_tokens` placeholder tokens in front of `input_ids` (and
of the attention mask, segment ids and positions, when given); the first token-embedding
lookup of the call then puts the soft prompt, `soft_prompt` [P, d_model], in their place.
The prompt passes through every layer like real tokens, at positions 0..P-1, and its outputs
are cut off the logits, so callers see [B, T, V] as before.

Lester et al. (2021, sec. 3.2) initialise the prompt from embeddings of vocabulary tokens
(`peft.prompt_init="vocab"`, rows of the base embedding table drawn at random); "random" is
N(0, init_std). A row is one example: packed rows would show the prompt to their first
example only, so research.config.experiment refuses data.pack=true. The soft prompt would
also have to enter the KV cache before decoding, which a wrapped `apply` cannot arrange:
decoding with a cache is refused (`supports_cache` is False).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.layers import linear
from research.peft import core

NAME = "soft_prompt"
_pending = threading.local()  # the soft prompt waiting for the call's first embedding lookup


@dataclasses.dataclass(frozen=True)
class PromptTuning(core.Method):
  supports_cache: ClassVar[bool] = False

  def intercept(self, next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(module, linear.Embed) and getattr(_pending, "prompt", None) is not None:
      prompt, _pending.prompt = _pending.prompt, None
      x = next_fun(*args, **kwargs)
      return x.at[:, :prompt.shape[0]].set(prompt.astype(x.dtype))
    if module.path != ():  # only the root call (lifted modules have Scope parents too)
      return next_fun(*args, **kwargs)
    return self._root(module, next_fun, args, kwargs)

  def _root(self, module, next_fun, args, kwargs):
    call = core.bind_call(module, "__call__", args, kwargs)
    values = call.arguments
    if values.get("cache") is not None:
      raise ValueError("peft.method='prompt' cannot decode with a KV cache: the soft prompt is "
                       "part of the input; score or decode without a cache")
    n = self.cfg.num_tokens
    prompt = module.param(NAME, nn.with_logical_partitioning(
        linear.normal(self.cfg.init_std), ("virtual_tokens", "embed")),
        (n, module.cfg.d_model), jnp.float32)
    ids = values["input_ids"]
    b = ids.shape[0]

    def prepend(x, head):
      return None if x is None else jnp.concatenate([jnp.broadcast_to(head, (b, n)).astype(x.dtype), x], 1)

    values["input_ids"] = prepend(ids, 0)
    if "attention_mask" in values:
      values["attention_mask"] = prepend(values["attention_mask"], 1)
    if values.get("segment_ids") is not None:
      # The prompt belongs to the row's (one) example: segment 1 for any non-empty row.
      values["segment_ids"] = prepend(values["segment_ids"], jnp.maximum(values["segment_ids"][:, :1], 1))
    if values.get("position_ids") is not None:
      values["position_ids"] = prepend(values["position_ids"] + n, jnp.arange(n)[None])
    _pending.prompt = prompt
    try:
      logits = core.call_bound(next_fun, call)
    finally:
      _pending.prompt = None
    return logits[:, n:]

  def warm_start(self, peft, trainable, base_params, rng, vocab_size):
    if self.cfg.prompt_init != "vocab":
      return trainable
    tables = [(path, leaf) for path, leaf in core.flat(base_params).items()
              if path[-1] == "embedding" and "tokens" in path and leaf.ndim == 2]
    if not tables:
      raise ValueError("peft.prompt_init='vocab' found no token embedding table "
                       "(.../tokens/embedding) in the base parameters; use peft.prompt_init=random")
    table = tables[0][1]
    rows = jax.random.randint(rng, (self.cfg.num_tokens,), 0, vocab_size)
    return {**trainable, NAME: table[rows].astype(trainable[NAME].dtype)}
