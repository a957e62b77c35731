"""What every PEFT method shares: the model wrapper, parameter trees, and the training form.

A method changes a model it does not edit. `PeftModel(base, method)` runs `base.apply` inside
`flax.linen.intercept_methods(method.intercept)`: the method's interceptor sees every module
call (a `Linear`, an `Attention`, the root `__call__`), can change its arguments and its
result, and creates its own parameters in the scope of the module it intercepts. So they sit
next to the weights they adapt (`blocks/layers/attn/q/lora_a`), a scanned stack stacks them
on its `layers` axis like any other parameter, and they carry logical axis names the
sharding rules place. Any family built from research.layers gets every method for free.

Parameters come in three forms:
- model form: the method's leaves of the full parameter tree, what the interceptor reads;
- training form (`Peft.init`, what the optimizer updates and checkpoints hold): the model
  form, or a reparameterisation of it (prefix tuning's MLP) or a part of it (LLaMA-Adapter's
  top layers);
- exported form (`Peft.export`, what an adapter file holds): the model form computed once,
  or the training form where nothing is derived. `to_model` accepts it as well.

The base parameters never enter the optimizer: research.train.step passes them as frozen
inputs, so they stay bit-identical and cost no gradient or optimizer memory.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from research.config.peft import PeftConfig
from research.models import registry

Path = tuple[str, ...]


# ------------------------------------------------------------------------ trees


def flat(tree) -> dict[Path, Any]:
  """{path tuple: leaf} of a nested dict (boxed leaves stay boxed)."""
  return flatten_dict(tree, is_leaf=lambda k, v: not isinstance(v, dict))


def nested(flat_tree: dict[Path, Any]):
  return unflatten_dict(flat_tree)


def merge(base, extra):
  """The union of two nested dicts with disjoint leaves."""
  out = flat(base)
  for path, leaf in flat(extra).items():
    if path in out:
      raise ValueError(f"parameter {'/'.join(path)} is in both trees")
    out[path] = leaf
  return nested(out)


def subtract(full, base):
  """The leaves of `full` whose paths `base` does not have."""
  known = set(flat(base))
  return nested({p: v for p, v in flat(full).items() if p not in known})


def count(tree) -> int:
  return sum(math.prod(getattr(leaf, "shape", ())) for leaf in jax.tree.leaves(nn.unbox(tree)))


def bind_call(module: nn.Module, method_name: str, args, kwargs) -> inspect.BoundArguments:
  """The arguments of an intercepted call by name (defaults filled in)."""
  bound = inspect.signature(getattr(type(module), method_name)).bind(module, *args, **kwargs)
  bound.apply_defaults()
  return bound


def call_bound(next_fun, bound: inspect.BoundArguments):
  values = dict(bound.arguments)
  values.pop(next(iter(values)))  # self: next_fun is bound already
  return next_fun(**values)


# ---------------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True)
class Method:
  """A PEFT method: an interceptor plus how its training form maps to its model form.

  Subclasses override `intercept` and, where the forms differ, the `Peft` hooks below. They
  are frozen and hashable, so a wrapped model keys compilation caches like a plain one.
  """

  cfg: PeftConfig
  # Whether the wrapped model decodes with a KV cache (research.inference.generate).
  supports_cache: ClassVar[bool] = True

  def intercept(self, next_fun, args, kwargs, context):
    return next_fun(*args, **kwargs)

  # Hooks; `peft` gives the adapter's model-form shapes (`peft.adapter_boxed`).
  def check(self, peft: "Peft") -> None:
    """Raises if the configuration does not fit the model (called once, by `bind`)."""

  def init_trainable(self, peft: "Peft", rng):
    """Boxed training-form parameters (default: the interceptor's own initialisation)."""
    return subtract(peft.model.init({"params": rng}, **peft.dummy_inputs)["params"], peft.base_boxed)

  def to_model(self, peft: "Peft", trainable):
    return trainable

  def export(self, peft: "Peft", trainable):
    return trainable

  def warm_start(self, peft: "Peft", trainable, base_params, rng, vocab_size: int):
    """Training-form parameters initialised from the base (default: unchanged)."""
    return trainable


@dataclasses.dataclass(frozen=True)
class PeftModel:
  """`base` with `method` applied: `.apply`/`.init` as a Flax module's, `.cfg` the base's."""

  base: nn.Module
  method: Method

  @property
  def cfg(self):
    return self.base.cfg

  def apply(self, variables, *args, **kwargs):
    with nn.intercept_methods(self.method.intercept):
      return self.base.apply(variables, *args, **kwargs)

  def init(self, rngs, *args, **kwargs):
    with nn.intercept_methods(self.method.intercept):
      return self.base.init(rngs, *args, **kwargs)

  def replace_base(self, base: nn.Module) -> "PeftModel":
    return dataclasses.replace(self, base=base)


@dataclasses.dataclass
class Peft:
  """A method bound to a base model: shapes of every form, and the maps between them."""

  method: Method
  model: PeftModel
  base_boxed: Any  # abstract boxed base parameters
  adapter_boxed: Any  # abstract boxed model-form adapter parameters

  @property
  def cfg(self) -> PeftConfig:
    return self.method.cfg

  @property
  def dummy_inputs(self) -> dict:
    return registry.dummy_inputs(self.model.cfg)

  def init(self, rng):
    """Boxed training-form parameters (the optimizer's, with logical axis names)."""
    return self.method.init_trainable(self, rng)

  def trainable_boxed(self):
    return jax.eval_shape(self.init, jax.random.key(0))

  def num_trainable(self) -> int:
    return count(self.trainable_boxed())

  def to_model(self, trainable):
    return self.method.to_model(self, trainable)

  def combine(self, base_params, trainable):
    """The full parameter tree the wrapped model applies."""
    return merge(base_params, self.to_model(trainable))

  def export(self, trainable):
    return self.method.export(self, trainable)

  def warm_start(self, trainable, base_params, rng, vocab_size: int):
    return self.method.warm_start(self, trainable, base_params, rng, vocab_size)


def boxed_shapes(model, cfg) -> Any:
  """Abstract boxed parameters of `model` (a Flax module or a PeftModel)."""
  return jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, **registry.dummy_inputs(cfg))["params"])


def bind(method_cls: Callable[[PeftConfig], Method], cfg: PeftConfig, base: nn.Module) -> Peft:
  method = method_cls(cfg)
  model = PeftModel(base, method)
  base_boxed = boxed_shapes(base, base.cfg)
  adapter = subtract(boxed_shapes(model, base.cfg), base_boxed)
  peft = Peft(method, model, base_boxed, adapter)
  method.check(peft)
  if not flat(adapter):
    raise ValueError(f"peft.method={cfg.method!r} found nothing to adapt in this "
                     f"{base.cfg.family} model")
  return peft


# ------------------------------------------------------------------ layer indices


def layer_numbers(tree, leaf_path: Path, leaf) -> tuple[int, Any]:
  """(depth of the leaf's stack, layer number of the leaf or of each row of its leading axis).

  Scanned stacks store layer i at row i of a leading `layers` axis (`.../layers/...`), loops
  at `.../layers_{i}/...`; a stack repeating groups of k blocks (`block_{j}`, with an MoE in
  every k-th layer) numbers layer g * k + j.
  """
  keys = list(leaf_path)
  stack_at = next((i for i, key in enumerate(keys)
                   if key == "layers" or (key.startswith("layers_") and key[7:].isdigit())), None)
  if stack_at is None:
    raise ValueError(f"{'/'.join(leaf_path)} is not inside a layer stack")
  j, k = 0, 1
  if stack_at + 1 < len(keys) and keys[stack_at + 1].startswith("block_"):
    j = int(keys[stack_at + 1][6:])
    parent = flat_children(tree, keys[:stack_at + 1])
    k = len([c for c in parent if c.startswith("block_")])
  if keys[stack_at] == "layers":
    groups = nn.unbox(leaf).shape[0]
    return groups * k, np.arange(groups) * k + j
  siblings = flat_children(tree, keys[:stack_at])
  groups = len([c for c in siblings if c.startswith("layers_") and c[7:].isdigit()])
  return groups * k, int(keys[stack_at][7:]) * k + j


def flat_children(tree, prefix) -> list[str]:
  node = tree
  for key in prefix:
    node = node[key]
  return list(node)
