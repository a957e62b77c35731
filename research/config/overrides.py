"""Dotted `key=value` overrides applied to nested frozen config dataclasses.

    apply(config, ["model.n_layers=4", "optimizer.lr=1e-3", "model.sliding_window=none"])

Values are parsed by the field's type (int, float, bool, str, tuples as comma-separated
lists, `none` for optional fields). An unknown key is an error that lists close matches;
a value of the wrong type is an error naming the key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from typing import Any

from research.config.validate import close_matches

_NONE = {"none", "null"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def flat_keys(cls_or_obj, prefix: str = "") -> list[str]:
  """Every overridable dotted key of a config dataclass."""
  cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
  hints = typing.get_type_hints(cls)
  keys = []
  for f in dataclasses.fields(cls):
    hint = hints[f.name]
    if dataclasses.is_dataclass(hint):
      keys += flat_keys(hint, f"{prefix}{f.name}.")
    else:
      keys.append(f"{prefix}{f.name}")
  return keys


def apply(config, overrides: Iterable[str]):
  """`config` with the overrides applied. Each section validates itself as it changes; the
  checks across sections run once at the end, so their order does not matter
  (`train.objective=sft data.loss_on=answer`)."""
  changes: dict[str, Any] = {}
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep or not key:
      raise ValueError(f"override {item!r} is not of the form key=value (e.g. model.n_layers=4)")
    path = key.strip().split(".")
    hints = typing.get_type_hints(type(config))
    if len(path) > 1 and dataclasses.is_dataclass(hints.get(path[0])):
      section = changes.get(path[0], getattr(config, path[0]))
      changes[path[0]] = _set(section, path[1:], raw.strip(), key.strip(), config)
    else:
      config = _set(dataclasses.replace(config, **changes), path, raw.strip(), key.strip(), config)
      changes = {}
  return dataclasses.replace(config, **changes) if changes else config


def _set(obj, path: list[str], raw: str, full_key: str, root):
  hints = typing.get_type_hints(type(obj))
  name = path[0]
  if name not in hints or name not in {f.name for f in dataclasses.fields(obj)}:
    raise ValueError(f"unknown config key {full_key!r}{close_matches(full_key, flat_keys(root))}; "
                     f"run with --help to list every key")
  hint = hints[name]
  if len(path) > 1:
    if not dataclasses.is_dataclass(hint):
      raise ValueError(f"config key {full_key!r}: {name!r} is a value, not a section")
    return dataclasses.replace(obj, **{name: _set(getattr(obj, name), path[1:], raw, full_key, root)})
  if dataclasses.is_dataclass(hint):
    raise ValueError(f"config key {full_key!r} is a section; set one of its fields, e.g. {full_key}.<field>=...")
  return dataclasses.replace(obj, **{name: parse(raw, hint, full_key)})


def _parse_bool(raw: str) -> bool:
  if raw.lower() in _TRUE:
    return True
  if raw.lower() in _FALSE:
    return False
  raise ValueError(raw)


def _parse_str(raw: str) -> str:
  # Lets a shell-quoted "\n" or "\t" become a newline or tab (prompts, separators); other
  # text, non-ASCII included, passes through untouched.
  return raw.replace("\\n", "\n").replace("\\t", "\t")


_PARSERS = {bool: _parse_bool, int: int, float: float, str: _parse_str}


def parse(raw: str, hint: Any, key: str = "value") -> Any:
  """`raw` as a value of type `hint`."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    if raw.lower() in _NONE and type(None) in args:
      return None
    options = [a for a in args if a is not type(None)]
    errors = []
    for option in options:
      try:
        return parse(raw, option, key)
      except ValueError as err:
        errors.append(str(err))
    raise ValueError(errors[0])
  if origin is tuple:
    item_type = args[0] if args else str
    if raw.startswith("["):
      items = json.loads(raw)
    else:
      items = [s for s in raw.split(",") if s.strip()]
    return tuple(parse(str(i).strip(), item_type, key) for i in items)
  parser = _PARSERS.get(hint)
  if parser is not None:
    try:
      return parser(raw)
    except ValueError:
      pass
  type_name = getattr(hint, "__name__", str(hint))
  raise ValueError(f"config key {key!r}: {raw!r} is not a valid {type_name}")
