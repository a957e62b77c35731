"""GPipe pipeline parallelism over the `stage` mesh axis (Huang et al. 2019).

The L layers are split into S stages of L/S consecutive layers. The batch is split into M
microbatches; at tick t, stage s works on microbatch t - s, so after M + S - 1 ticks every
microbatch has passed every stage. All stages run in one vmapped call per tick, their
parameters sharded over `stage`, and the stage outputs move to the next stage with a roll
along the stage axis, which XLA lowers to a collective permute. Idle fraction ("bubble"):
(S - 1) / (M + S - 1).

Parameters are those of the plain scanned stack, [L, ...] with the `layers` axis (mapped to
the `stage` mesh axis when pipelining), so a checkpoint restores with or without
pipelining. Initialisation goes through the plain stack; the pipelined forward reads the
same parameters and applies the block functionally.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def split_microbatches(tree, m: int):
  """[B, ...] -> [M, B/M, ...], microbatch i holding rows i, i+M, ... (device-local when the
  batch axis is sharded)."""
  return jax.tree.map(lambda x: jnp.moveaxis(x.reshape(x.shape[0] // m, m, *x.shape[1:]), 1, 0), tree)


def merge_microbatches(x):
  return jnp.moveaxis(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def run(params, cfg, block: nn.Module, x, mask, bias, positions, deterministic: bool,
        dropout_rng, remat_policy=None):
  """The stack's output for input x, computed as an S-stage, M-microbatch GPipe schedule.

  `params` are the stacked layer parameters [L, ...]; `block` an unbound Block instance.
  """
  stages, micro = cfg.pipeline_stages, cfg.pipeline_microbatches
  stage_params = jax.tree.map(lambda p: p.reshape(stages, p.shape[0] // stages, *p.shape[1:]), params)

  def layer(h, p, mask, bias, pos, rng):
    rngs = {} if rng is None else {"dropout": rng}
    return block.apply({"params": p}, h, mask, bias, pos, None, deterministic, rngs=rngs)[0]

  if remat_policy is not None:
    layer = jax.checkpoint(layer, policy=remat_policy)

  def stage(p_stage, h, mask, bias, pos, rng):
    def body(h, xs):
      p, i = xs
      return layer(h, p, mask, bias, pos, None if rng is None else jax.random.fold_in(rng, i)), None

    n = jax.tree.leaves(p_stage)[0].shape[0]
    return jax.lax.scan(body, h, (p_stage, jnp.arange(n)))[0]

  bias_axes = None if bias is None else bias.batch_axes(0)
  all_stages = jax.vmap(stage, in_axes=(0, 0, 0, bias_axes, 0, None if dropout_rng is None else 0),
                        spmd_axis_name="stage")
  x_mb, mask_mb, pos_mb = split_microbatches((x, mask, positions), micro)
  bias_mb = None if bias is None else bias.map_batch(lambda a: split_microbatches(a, micro))

  def tick(carry, t):
    state, outputs = carry
    # Stage s works on microbatch t - s; clipping only touches ticks whose result is unused.
    index = jnp.clip(t - jnp.arange(stages), 0, micro - 1)
    pick = lambda tree: jax.tree.map(lambda a: a[index], tree)
    pick_bias = lambda b: None if b is None else b.map_batch(lambda a: a[index])
    rngs = None
    if dropout_rng is not None:
      rngs = jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(dropout_rng, t), s))(jnp.arange(stages))
    state = state.at[0].set(x_mb[jnp.minimum(t, micro - 1)])
    out = all_stages(stage_params, state, pick(mask_mb), pick_bias(bias_mb), pick(pos_mb), rngs)
    done = t - (stages - 1)
    finished = outputs.at[jnp.clip(done, 0, micro - 1)].set(out[-1])
    outputs = jnp.where((done >= 0) & (done < micro), finished, outputs)
    state = nn.with_logical_constraint(jnp.roll(out, 1, axis=0),
                                       ("stage", "act_batch", "act_length", "act_embed"))
    return (state, outputs), None

  state = jnp.zeros((stages, *x_mb.shape[1:]), x.dtype)
  (_, outputs), _ = jax.lax.scan(tick, (state, jnp.zeros_like(x_mb)), jnp.arange(micro + stages - 1))
  return merge_microbatches(outputs)
