"""ModelConfig.family -> Flax module, and parameter initialisation without surprises.

`init_params` returns a plain pytree of arrays (logical-axis boxes removed);
`param_axes` the matching tree of logical PartitionSpecs; `param_shapes` the shapes,
computed with `jax.eval_shape` so nothing is allocated.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.config.model import ModelConfig
from research.models.decoder import CausalLM
from research.models.encoder import Encoder
from research.models.encoder_decoder import EncoderDecoder

FAMILIES: dict[str, type[nn.Module]] = {
    "decoder": CausalLM,
    "encoder": Encoder,  # BERT, RoBERTa, ALBERT (research/models/encoder.py)
    "encoder_decoder": EncoderDecoder,
    # GLM-style prefix LM: the causal LM with a bidirectional prefix and 2D positions.
    "prefix_lm": CausalLM,
}


def build(cfg: ModelConfig) -> nn.Module:
  return FAMILIES[cfg.family](cfg)


def dummy_inputs(cfg: ModelConfig, batch: int = 1, length: int = 8) -> dict[str, jax.Array]:
  """Smallest inputs that touch every parameter of the family (for init and eval_shape)."""
  length = min(length, cfg.max_seq_len)
  batch = max(batch, cfg.pipeline_microbatches)
  ids = jnp.zeros((batch, length), jnp.int32)
  if cfg.family == "encoder_decoder":
    return {"input_ids": ids, "decoder_input_ids": ids}
  return {"input_ids": ids}


def _boxed_init(cfg: ModelConfig, rng: jax.Array):
  model = build(cfg)
  return model.init({"params": rng}, **dummy_inputs(cfg))["params"]


@functools.lru_cache(maxsize=64)
def _jitted_init(cfg: ModelConfig):
  return jax.jit(lambda rng: nn.unbox(_boxed_init(cfg, rng)))


def init_params(cfg: ModelConfig, rng: jax.Array):
  """Freshly initialised parameters as a plain pytree of arrays (one compiled program)."""
  return _jitted_init(cfg)(rng)


def param_shapes(cfg: ModelConfig):
  """ShapeDtypeStructs of the parameters (plain pytree), without allocating."""
  return nn.unbox(jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0))))


@functools.lru_cache(maxsize=256)
def num_params(cfg: ModelConfig) -> int:
  """Parameter count (every expert included), from the shapes: nothing is allocated.

  Cached: tracing the initialiser takes ~0.1 s, and the loop and sweep reports ask per run
  and per row."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes(cfg))))


def param_axes(cfg: ModelConfig):
  """Logical PartitionSpec of every parameter, e.g. P('layers', 'embed', 'heads', 'head_dim')."""
  boxed = jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0)))
  return nn.get_partition_spec(boxed)
