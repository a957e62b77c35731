"""LoRA (Hu et al. 2021): a trainable low-rank update next to frozen projections.

    h = W x + (alpha / r) * B A x                        (Hu et al. 2021, eq. 3)

for every `research.layers.linear.Linear` whose module path matches `peft.targets`, with
A: [*in, r] and B: [r, *out] (our kernels contract several input dims, e.g. the attention
output's [N, H]). B starts at zero, so the wrapped model starts as the base model exactly; A
is uniform with bound 1/sqrt(fan_in), the Kaiming-uniform init of the reference PEFT library.
Dropout (`peft.dropout`) applies to the LoRA branch's input when the call has a dropout RNG
(training steps do, evaluation does not). A and B are float32 whatever the base's dtype.

`merge` folds the update into the kernels (W + (alpha / r) B A) so the plain base model
serves the fine-tuned function at no extra cost; `unmerge` takes it out again.
"""

from __future__ import annotations

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.config.peft import TARGET_ALIASES
from research.layers import linear
from research.peft import core

A, B = "lora_a", "lora_b"


def _matches(targets: tuple[str, ...], path: tuple[str, ...]) -> bool:
  """Whether a target matches the end of the module path ('q' matches 'blocks/layers/attn/q')."""
  suffixes = ["/".join(path[i:]) for i in range(len(path))]
  return any(re.fullmatch(t, s) for t in targets for s in suffixes)


@dataclasses.dataclass(frozen=True)
class LoRA(core.Method):

  def intercept(self, next_fun, args, kwargs, context):
    module = context.module
    if not (isinstance(module, linear.Linear) and context.method_name == "__call__"
            and _matches(self.cfg.expanded_targets(), module.path)):
      return next_fun(*args, **kwargs)
    y = next_fun(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    n_in, r = len(module.in_shape), self.cfg.rank
    a = module.param(
        A, nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform",
                                             in_axis=tuple(range(n_in)), out_axis=-1),
            (*module.axes[:n_in], "lora_rank")),
        (*module.in_shape, r), jnp.float32)
    b = module.param(
        B, nn.with_logical_partitioning(nn.initializers.zeros, ("lora_rank", *module.axes[n_in:])),
        (r, *module.out_shape), jnp.float32)
    if self.cfg.dropout > 0 and module.has_rng("dropout"):
      keep = jax.random.bernoulli(module.make_rng("dropout"), 1 - self.cfg.dropout, x.shape)
      x = jnp.where(keep, x / (1 - self.cfg.dropout), 0)
    dtype = module.dtype
    contract = tuple(range(x.ndim - n_in, x.ndim))
    h = jax.lax.dot_general(x.astype(dtype), a.astype(dtype), ((contract, tuple(range(n_in))), ((), ())))
    delta = jax.lax.dot_general(h, b.astype(dtype), (((h.ndim - 1,), (0,)), ((), ())))
    return y + (self.cfg.scale * delta).astype(y.dtype)

  def check(self, peft):
    modules = adapted(peft.adapter_boxed)
    for target in self.cfg.targets:
      names = TARGET_ALIASES.get(target, (target,))
      if not any(_matches(names, m) for m in modules):
        names = sorted({"/".join(p[-3:-1]) for p in core.flat(peft.base_boxed) if p[-1] == "kernel"})
        raise ValueError(f"peft.targets: {target!r} matches no projection of this model; its "
                         f"projections end in: {', '.join(names)}")


def adapted(params) -> list[core.Path]:
  """Paths of the modules holding a LoRA pair."""
  return sorted({p[:-1] for p in core.flat(params) if p[-1] == A})


def kernel_delta(a, b, kernel_shape, scale: float):
  """(alpha / r) * B A in the kernel's layout [*lead, *in, *out], from A [*lead, *in, r] and
  B [*lead, r, *out]; `lead` is a scanned stack's layer axis, or nothing."""
  n_out = len(kernel_shape) - a.ndim + 1
  n_lead = b.ndim - 1 - n_out
  lead = a.shape[:n_lead]
  a2 = a.reshape(*lead, -1, a.shape[-1])
  b2 = b.reshape(*lead, b.shape[n_lead], -1)
  return (scale * jnp.matmul(a2.astype(jnp.float32), b2.astype(jnp.float32))).reshape(kernel_shape)


def merge(params, cfg, sign: float = 1.0):
  """Params with every LoRA pair folded into its kernel and removed: W + (alpha / r) B A, or
  with sign=-1 taken out of it (`unmerge`)."""
  tree = core.flat(params)
  for module in adapted(params):
    a, b = tree.pop(module + (A,)), tree.pop(module + (B,))
    kernel = tree[module + ("kernel",)]
    update = kernel_delta(a, b, kernel.shape, cfg.scale)
    tree[module + ("kernel",)] = (kernel.astype(jnp.float32) + sign * update).astype(kernel.dtype)
  return core.nested(tree)


def unmerge(merged_params, lora_params, cfg):
  """The base parameters back from merged ones, given the LoRA pairs (up to rounding)."""
  return merge(core.merge(merged_params, lora_params), cfg, sign=-1.0)
