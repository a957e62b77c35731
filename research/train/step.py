"""Pure train and eval steps, built once per run and jitted by the loop.

    train_step(state, batch[, frozen]) -> (state, metrics)
    eval_step(params, batch[, frozen]) -> metric sums

Microbatching (grad_accum > 1) scans over slices of the batch, summing gradients of the
summed loss, then divides once by the total weight: identical to the full-batch gradient.
A step whose loss or gradients are not finite leaves parameters and optimizer state as they
were and is counted (Micikevicius et al. 2018 for the fp16 loss-scale rule).

Post-training adds parameters that are read but never trained (a PEFT method's base model, a
distillation teacher): they come in as `frozen`, a separate argument, and `assemble(params,
frozen)` builds what the objective reads. Gradients are taken with respect to `state.params`
alone, so no gradient, optimizer state or checkpoint space is spent on the frozen ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from research.config.train import TrainConfig
from research.train.state import TrainState


def _tree_add(a, b):
  return jax.tree.map(jnp.add, a, b)


def _split_microbatches(batch, n: int):
  """[b, ...] -> [n, b/n, ...], microbatch i holding rows i, i+n, ... (stays device-local
  when the batch axis is sharded)."""
  return jax.tree.map(lambda x: jnp.moveaxis(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 1, 0), batch)


def make_train_step(model, objective, optimizer, lr_schedule, cfg: TrainConfig, *,
                    grad_shardings=None, opt_device_shardings=None, opt_host_shardings=None,
                    axis_name: str | None = None, assemble=None):
  """The step function. Optional arguments come from a research.sharding.plan.TrainingPlan:

  grad_shardings        gradients are constrained to these (ZeRO-2/3: reduce-scattered)
  opt_*_shardings       the optimizer state lives in host memory and visits the device
  axis_name             pmap's axis: gradient and loss sums are psummed across it

  and from research.train.finetune: `assemble(params, frozen)` -> what the objective reads.
  """
  accum = cfg.grad_accum
  fp16 = cfg.precision == "fp16"
  assemble = assemble or (lambda params, frozen: params)

  def scaled_loss(params, batch, rng, scale, frozen):
    loss_sum, weight, metrics = objective(model, assemble(params, frozen), batch, rng,
                                          deterministic=False)
    return loss_sum * scale, (weight, metrics)

  grad_fn = jax.grad(scaled_loss, has_aux=True)

  def gradients(params, batch, rng, scale, frozen):
    if accum == 1:
      return grad_fn(params, batch, rng, scale, frozen)

    def body(carry, xs):
      micro, i = xs
      g, (w, m) = grad_fn(params, micro, jax.random.fold_in(rng, i), scale, frozen)
      g = jax.tree.map(lambda x: x.astype(jnp.float32), g)
      return _tree_add(carry, (g, (w, m))), None

    micro = _split_microbatches(batch, accum)
    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng, scale, frozen)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
    total, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
    return total

  def train_step(state: TrainState, batch, frozen=None) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grads, (weight, sums) = gradients(state.params, batch, rng, state.loss_scale, frozen)
    if axis_name is not None:
      grads, weight, sums = jax.lax.psum((grads, weight, sums), axis_name)
    if grad_shardings is not None:
      grads = jax.lax.with_sharding_constraint(grads, grad_shardings)
    weight = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32) / (weight * state.loss_scale), grads)
    loss = sums["loss"] / weight
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    old_opt_state = state.opt_state
    if opt_device_shardings is not None:
      old_opt_state = jax.device_put(old_opt_state, opt_device_shardings)

    def update(operands):
      params, opt_state = operands
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    # A branch rather than a select over every parameter and moment: a skipped step costs
    # nothing, and a finite one no extra pass over the state.
    params, opt_state = jax.lax.cond(finite, update, lambda operands: operands,
                                     (state.params, old_opt_state))
    if opt_host_shardings is not None:
      opt_state = jax.device_put(opt_state, opt_host_shardings)

    loss_scale, good = state.loss_scale, state.good_steps
    if fp16:
      grow = finite & (good + 1 >= cfg.loss_scale_period)
      loss_scale = jnp.where(finite, jnp.where(grow, loss_scale * 2.0, loss_scale),
                             jnp.maximum(loss_scale / 2.0, 1.0))
      good = jnp.where(finite & ~grow, good + 1, 0)

    new_state = state.replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        loss_scale=loss_scale,
        good_steps=good,
        nonfinite_run=jnp.where(finite, 0, state.nonfinite_run + 1),
        skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    metrics = {k: v / weight for k, v in sums.items()}
    metrics.update(
        grad_norm=grad_norm, lr=lr_schedule(state.step), tokens=weight,
        skipped=(~finite).astype(jnp.int32), loss_scale=state.loss_scale)
    return new_state, metrics

  return train_step


def make_eval_step(model, objective, assemble=None):
  assemble = assemble or (lambda params, frozen: params)

  def eval_step(params, batch, frozen=None) -> dict[str, jax.Array]:
    loss_sum, weight, sums = objective(model, assemble(params, frozen), batch, None,
                                       deterministic=True)
    return {"weight": weight, **sums}

  return eval_step
