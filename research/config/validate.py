"""Shared checks for the frozen config dataclasses.

Every check raises `ValueError` naming the owner and field, the bad value and what is allowed,
so a sweep that gets a typo fails before any device time is spent.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def choice(owner: str, field: str, value: Any, allowed: Iterable[Any]) -> None:
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(
        f"{owner}.{field}={value!r} is not allowed; choose one of: "
        + ", ".join(repr(a) for a in allowed)
    )


def positive(owner: str, field: str, value: float, *, allow_zero: bool = False) -> None:
  ok = value >= 0 if allow_zero else value > 0
  if not ok:
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{owner}.{field}={value!r} must be {bound}")


def in_range(owner: str, field: str, value: float, lo: float, hi: float) -> None:
  if not lo <= value <= hi:
    raise ValueError(f"{owner}.{field}={value!r} must lie in [{lo}, {hi}]")


def divisible(owner: str, field: str, value: int, by_field: str, by: int) -> None:
  if by <= 0 or value % by:
    raise ValueError(
        f"{owner}.{field}={value} must be divisible by {owner}.{by_field}={by}"
    )


def close_matches(name: str, candidates: Iterable[str]) -> str:
  found = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
  return f" (did you mean {', '.join(found)}?)" if found else ""


def from_dict(cls: type, values: Mapping[str, Any]) -> Any:
  """Builds dataclass `cls` from a mapping, refusing unknown keys by name.

  Nested dataclass fields are built recursively from nested mappings.
  """
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = [k for k in values if k not in fields]
  if unknown:
    k = unknown[0]
    raise ValueError(
        f"{cls.__name__} has no field {k!r}{close_matches(k, fields)}; "
        f"fields: {', '.join(fields)}"
    )
  kwargs = {}
  for key, value in values.items():
    sub = _dataclass_type(cls, key)
    if sub is not None and isinstance(value, Mapping):
      value = from_dict(sub, value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[key] = value
  return cls(**kwargs)


def _dataclass_type(cls: type, name: str) -> type | None:
  """The dataclass type of field `name` of `cls`, if it is one."""
  hints = _type_hints(cls)
  hint = hints.get(name)
  return hint if dataclasses.is_dataclass(hint) else None


# Resolving the string annotations (`from __future__ import annotations`) costs ~2 ms a class;
# from_dict asked once per field, ~0.15 s a config. A class's hints never change.
@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def to_dict(config: Any) -> dict[str, Any]:
  """JSON-ready dict of a (nested) config dataclass."""
  return dataclasses.asdict(config)
