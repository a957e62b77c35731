"""Small shared helpers for the tests (tiny configs, jitted forward)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from research.config import ModelConfig
from research.models import registry


def tiny(**overrides) -> ModelConfig:
  base = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
  base.update(overrides)
  return ModelConfig(**base)


@functools.lru_cache(maxsize=None)
def _forward(cfg: ModelConfig):
  model = registry.build(cfg)
  return jax.jit(lambda params, ids, **kw: model.apply({"params": params}, input_ids=ids, **kw))


def forward(cfg: ModelConfig, params, ids, **kwargs):
  return _forward(cfg)(params, jnp.asarray(ids), **kwargs)


def random_ids(shape, vocab=97, seed=0):
  return jax.random.randint(jax.random.key(seed), shape, 0, vocab)
