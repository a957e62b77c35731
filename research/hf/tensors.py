"""Tensor name tables: which HF tensors make which of our parameters, and how.

A family declares a list of `Rule`s, each naming HF tensors and our parameters (paths in the
per-layer parameter tree, '/'-joined; `{i}` stands for the layer index) and a `Transform`
that converts between them, both ways:

    Rule("model.layers.{i}.self_attn.q_proj.weight", "blocks/layers_{i}/attn/q/kernel", Dense())

Our parameter tree is the source of truth: a rule applies exactly when its parameters exist
for the config (a bias rule is skipped for a bias-free model), and every parameter must be
made by some rule, which `applicable` checks so a new family cannot silently leave one out.

Layouts: torch's `nn.Linear` stores [out, in]; GPT-2's `Conv1D` stores [in, out]; our kernels
are [*in, *out] with heads split out ("DNH" for q, "NHD" for the output projection).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

Shape = tuple[int, ...]


class Transform(Protocol):
  def hf_shapes(self, ours: Sequence[Shape]) -> list[Shape]:
    """Shapes of the HF tensors that make parameters of shapes `ours`."""

  def to_ours(self, hf: Sequence[np.ndarray], ours: Sequence[Shape]) -> list[np.ndarray]: ...

  def to_hf(self, ours: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class Copy:
  """Same shape both sides (embedding tables, norm scales, model-width biases)."""

  def hf_shapes(self, ours):
    return [tuple(ours[0])]

  def to_ours(self, hf, ours):
    return [hf[0]]

  def to_hf(self, ours):
    return [ours[0]]


@dataclasses.dataclass(frozen=True)
class Flat:
  """A flat HF vector that we keep split into heads: a q/k/v bias [N * H] <-> [N, H]."""

  def hf_shapes(self, ours):
    return [(math.prod(ours[0]),)]

  def to_ours(self, hf, ours):
    return [hf[0].reshape(ours[0])]

  def to_hf(self, ours):
    return [ours[0].reshape(-1)]


@dataclasses.dataclass(frozen=True)
class Dense:
  """torch `nn.Linear` weight [out, in] <-> our kernel [*in, *out]; `in_dims` of ours are inputs."""

  in_dims: int = 1

  def hf_shapes(self, ours):
    shape = ours[0]
    return [(math.prod(shape[self.in_dims:]), math.prod(shape[:self.in_dims]))]

  def to_ours(self, hf, ours):
    return [hf[0].T.reshape(ours[0])]

  def to_hf(self, ours):
    kernel = ours[0]
    return [kernel.reshape(math.prod(kernel.shape[:self.in_dims]), -1).T]


@dataclasses.dataclass(frozen=True)
class Conv1D:
  """GPT-2's `Conv1D` weight, stored [in, out] (already our order), flattened."""

  in_dims: int = 1

  def hf_shapes(self, ours):
    shape = ours[0]
    return [(math.prod(shape[:self.in_dims]), math.prod(shape[self.in_dims:]))]

  def to_ours(self, hf, ours):
    return [hf[0].reshape(ours[0])]

  def to_hf(self, ours):
    kernel = ours[0]
    return [kernel.reshape(math.prod(kernel.shape[:self.in_dims]), -1)]


# How fused query/key/value outputs are ordered along the fused axis.
#   concat:  [all N query heads | K key heads | K value heads]  (GPT-2; Falcon-7B's multi-query
#            layout [q_1..q_N, k, v] is the same with K = 1)
#   grouped: for each of the K kv heads, its G = N / K query heads, then its key, then its value:
#            [K, G + 2, H]  (Falcon's new decoder architecture; GPT-NeoX and BLOOM's per-head
#            [N, 3, H] is the same with K = N, G = 1)
FUSED_LAYOUTS = ("concat", "grouped")
# The fused tensor's storage: torch Linear weight [W, D], Conv1D weight [D, W], or bias [W].
FUSED_STORAGE = ("dense", "conv1d", "bias")


@dataclasses.dataclass(frozen=True)
class FusedQKV:
  """One fused query/key/value tensor <-> our separate q, k, v (kernels [*lead, heads, H])."""

  layout: str
  storage: str

  def __post_init__(self):
    if self.layout not in FUSED_LAYOUTS:
      raise ValueError(f"FusedQKV.layout={self.layout!r}; choose one of {FUSED_LAYOUTS}")
    if self.storage not in FUSED_STORAGE:
      raise ValueError(f"FusedQKV.storage={self.storage!r}; choose one of {FUSED_STORAGE}")

  def hf_shapes(self, ours):
    *lead, n, h = ours[0]
    k = ours[1][-2]
    width = (n + 2 * k) * h
    return [{"dense": (width, *lead), "conv1d": (*lead, width), "bias": (width,)}[self.storage]]

  def to_ours(self, hf, ours):
    fused = hf[0].T if self.storage == "dense" else hf[0]  # [*lead, W]
    *lead, n, h = ours[0]
    k = ours[1][-2]
    if self.layout == "concat":
      q, kk, v = np.split(fused, [n * h, (n + k) * h], axis=-1)
      return [q.reshape(*lead, n, h), kk.reshape(*lead, k, h), v.reshape(*lead, k, h)]
    groups = fused.reshape(*lead, k, n // k + 2, h)
    q = groups[..., :-2, :].reshape(*lead, n, h)
    return [q, groups[..., -2, :], groups[..., -1, :]]

  def to_hf(self, ours):
    q, k, v = ours
    *lead, n, h = q.shape
    kv = k.shape[-2]
    if self.layout == "concat":
      fused = np.concatenate([a.reshape(*lead, -1) for a in (q, k, v)], axis=-1)
    else:
      groups = np.concatenate(
          [q.reshape(*lead, kv, n // kv, h), k[..., None, :], v[..., None, :]], axis=-2)
      fused = groups.reshape(*lead, -1)
    return [fused.T if self.storage == "dense" else fused]


@dataclasses.dataclass(frozen=True)
class Rule:
  """HF tensors `hf` <-> our parameters `ours` through `transform`; names may hold `{i}`."""

  hf: tuple[str, ...] | str
  ours: tuple[str, ...] | str
  transform: Transform = Copy()

  def __post_init__(self):
    for field in ("hf", "ours"):
      value = getattr(self, field)
      object.__setattr__(self, field, (value,) if isinstance(value, str) else tuple(value))

  @property
  def per_layer(self) -> bool:
    return any("{i}" in n for n in self.hf + self.ours)

  def for_layer(self, i: int) -> "Rule":
    name = lambda n: n.format(i=i)  # noqa: E731
    return Rule([name(n) for n in self.hf], [name(n) for n in self.ours], self.transform)


def applicable(rules: Sequence[Rule], param_paths, family: str) -> list[Rule]:
  """The concrete rules whose parameters exist in `param_paths`.

  A `{i}` rule is repeated for layers 0, 1, ... as long as that layer's parameters exist, so
  stacks of different depths (an encoder and a decoder) need nothing more. Raises if a rule
  finds only some of its parameters, or if some parameter has no rule: both mean the
  family's table does not describe this config.
  """
  params = set(param_paths)
  out = []
  for rule in rules:
    concrete = itertools.count() if rule.per_layer else [None]
    for i in concrete:
      candidate = rule if i is None else rule.for_layer(i)
      present = [p in params for p in candidate.ours]
      if all(present):
        out.append(candidate)
      elif any(present):
        raise RuntimeError(
            f"research.hf.{family}: rule for {candidate.hf} finds only some of {candidate.ours}")
      else:
        break
  made = [p for r in out for p in r.ours]
  uncovered = sorted(params - set(made))
  if uncovered:
    raise RuntimeError(f"research.hf.{family}: no tensor rule makes parameter(s) {uncovered}")
  if len(made) != len(set(made)):
    raise RuntimeError(f"research.hf.{family}: several rules make the same parameter")
  return out
