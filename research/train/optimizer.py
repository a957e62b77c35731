"""The optax chain for an `OptimizerConfig`: clip -> penalties -> optimizer with schedule.

Weight decay is decoupled (Loshchilov & Hutter 2019) and skips the parameter groups named
in `decay_exclude` (norms, biases, embeddings by default), matched on parameter paths.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from research.config.optim import OptimizerConfig


def _path_names(path) -> list[str]:
  return [str(getattr(p, "key", getattr(p, "name", p))) for p in path]


def _group(path) -> str:
  """'norms', 'biases', 'embeddings' or 'weights' for a parameter path."""
  names = _path_names(path)
  if any(n.endswith("norm") for n in names[:-1]):
    return "norms"
  if names[-1] == "bias":
    return "biases"
  if names[-1] == "embedding":
    return "embeddings"
  return "weights"


def decay_mask(exclude: tuple[str, ...]) -> Callable:
  """params -> tree of bools: True where weight decay applies."""

  def mask(params):
    return jax.tree_util.tree_map_with_path(lambda p, _: _group(p) not in exclude, params)

  return mask


def schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then cosine / linear decay to min_lr_ratio * lr, or constant."""
  decay_steps = cfg.decay_steps or total_steps
  warmup = min(cfg.warmup_steps, decay_steps)
  end = cfg.lr * cfg.min_lr_ratio
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(decay_steps, warmup + 1), end)
  ramp = optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)) if warmup else optax.constant_schedule(cfg.lr)
  if cfg.schedule == "linear":
    after = optax.linear_schedule(cfg.lr, end, max(decay_steps - warmup, 1))
  else:
    after = optax.constant_schedule(cfg.lr)
  return optax.join_schedules([ramp, after], [warmup])


def _l1_penalty(l1: float, mask) -> optax.GradientTransformation:
  """Adds l1 * sign(w) to the gradient (the subgradient of l1 * |w|)."""

  def update(updates, state, params):
    m = mask(params)
    updates = jax.tree.map(lambda g, w, keep: g + l1 * jnp.sign(w) * keep, updates, params, m)
    return updates, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def build(cfg: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  lr = schedule(cfg, total_steps)
  mask = decay_mask(cfg.decay_exclude)
  chain = []
  if cfg.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip))
  if cfg.l2 > 0:
    chain.append(optax.add_decayed_weights(cfg.l2, mask))  # coupled: enters the moments
  if cfg.l1 > 0:
    chain.append(_l1_penalty(cfg.l1, mask))
  wd = cfg.weight_decay
  if cfg.name == "adamw":
    chain.append(optax.adamw(lr, cfg.b1, cfg.b2, cfg.eps, weight_decay=wd, mask=mask))
  elif cfg.name == "lion":
    chain.append(optax.lion(lr, cfg.b1, cfg.b2, weight_decay=wd, mask=mask))
  elif cfg.name == "adafactor":
    chain.append(optax.adafactor(lr, weight_decay_rate=wd or None, weight_decay_mask=mask))
  else:  # sgd
    chain.append(optax.add_decayed_weights(wd, mask))
    chain.append(optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  return optax.chain(*chain), lr
