"""`load` and `save` Hugging Face checkpoints; `config_from_hf` and `config_to_hf`.

    model, params = load("path/to/save_pretrained_dir")            # scanned layers, stored dtype
    model, params = load(path, scan_layers=False, param_dtype="float32")   # any ModelConfig field
    save(model, params, "out")     # then transformers.AutoModelForCausalLM.from_pretrained("out")

Only safetensors are read (see research.hf.checkpoint); the family converters registered in
research.hf.registry say how each model_type's config and tensors map onto ours.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from research.config import validate
from research.config.model import DTYPES, ModelConfig
from research.hf import checkpoint, errors, registry, tensors
from research.layers.stack import stack_layers, unstack_layers
from research.models import registry as models

_EMBEDDING = "embed/tokens/embedding"
_HEAD = "lm_head/kernel"


def config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
  """The ModelConfig of an HF config.json dict (float32; `load` sets the stored dtype).

  Raises `ConversionError` naming the field for any value our models cannot reproduce.
  """
  converter = registry.get(hf_config.get("model_type"))
  return ModelConfig(**converter.config_from_hf(hf_config))


def config_to_hf(cfg: ModelConfig, model_type: str | None = None) -> dict[str, Any]:
  """An HF config.json dict for `cfg`, of `model_type` or else the first registered type
  that expresses `cfg` exactly (`research.hf.supported()` gives the order)."""
  if model_type is None:
    reasons = {}
    for candidate in registry.supported():
      reasons[candidate] = registry.get(candidate).unsupported(cfg)
      if not reasons[candidate]:
        model_type = candidate
        break
    else:
      raise errors.no_model_type_fits(reasons)
  converter = registry.get(model_type)
  reasons = converter.unsupported(cfg)
  if reasons:
    raise errors.not_expressible("ModelConfig", model_type, reasons)
  architecture = (converter.architecture_for(cfg) if converter.architecture_for
                  else converter.architecture)
  return {
      "model_type": model_type, "architectures": [architecture],
      **converter.config_to_hf(cfg), "dtype": cfg.param_dtype,
  }


def load(path: str | os.PathLike, **overrides: Any) -> tuple[nn.Module, Any]:
  """Our model and params from a `save_pretrained` directory of safetensors.

  `overrides` are ModelConfig fields set on top of the converted config (`scan_layers`,
  `remat`, `max_seq_len`, dropouts, ...). Params keep the dtype stored in the checkpoint
  unless `param_dtype` is given; the compute `dtype` defaults to the param dtype.
  """
  ckpt = checkpoint.Checkpoint(path)
  converter = registry.get(ckpt.config.get("model_type"))
  fields = converter.config_from_hf(ckpt.config)
  if converter.fields_from_checkpoint is not None:
    fields.update(converter.fields_from_checkpoint(ckpt.config, ckpt))
  param_dtype = overrides.pop("param_dtype", None) or ckpt.stored_dtype()
  if param_dtype not in DTYPES:
    raise errors.ConversionError(
        f"{ckpt.path} stores {param_dtype} tensors; pass param_dtype= one of {DTYPES} to cast them")
  overrides.setdefault("dtype", param_dtype)
  cfg = validate.from_dict(ModelConfig, {**fields, "param_dtype": param_dtype, **overrides})
  return models.build(cfg), _read_params(ckpt, converter, cfg)


def save(
    model: nn.Module | ModelConfig,
    params: Any,
    path: str | os.PathLike,
    *,
    model_type: str | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    extra_config: Mapping[str, Any] | None = None,
) -> pathlib.Path:
  """Writes `params` of `model` (or its ModelConfig) as an HF checkpoint directory.

  config.json plus model.safetensors, or shards of at most `max_shard_size` with
  model.safetensors.index.json, written atomically (see research.hf.checkpoint.write).
  `extra_config` adds config.json entries our config does not hold (bos/eos token ids).
  """
  cfg = model if isinstance(model, ModelConfig) else model.cfg
  hf_config = config_to_hf(cfg, model_type)
  converter = registry.get(hf_config["model_type"])
  _check_params(params, cfg)
  host = jax.device_get(params)
  flat = flatten_dict(unstack_layers(host) if cfg.scan_layers else host, sep="/")
  rules = tensors.applicable(converter.tensors(cfg), flat, converter.model_type)
  out: dict[str, np.ndarray] = {}
  for rule in rules:
    for name, array in zip(rule.hf, rule.transform.to_hf([np.asarray(flat[p]) for p in rule.ours])):
      out[name] = array
  hf_config.update(extra_config or {})
  return checkpoint.write(path, hf_config, out, max_shard_size=max_shard_size, overwrite=overwrite)


# ------------------------------------------------------------------------------- internals


def _read_params(ckpt: checkpoint.Checkpoint, converter: registry.Converter, cfg: ModelConfig):
  built = flatten_dict(models.param_shapes(cfg), sep="/")
  expected = _per_layer(built) if cfg.scan_layers else built
  table = list(converter.tensors(cfg))
  rules = tensors.applicable(table, expected, converter.model_type)
  stored = _table_names(ckpt, converter, table)
  dtype = jnp.dtype(cfg.param_dtype)
  flat = {}
  for rule in rules:
    our_shapes = [expected[p].shape for p in rule.ours]
    for name, shape in zip(rule.hf, rule.transform.hf_shapes(our_shapes)):
      if name not in stored:
        raise errors.missing_tensor(ckpt.path, name, shape, " + ".join(rule.ours))
      got = ckpt.shape(stored[name])
      if got != tuple(shape):
        raise errors.wrong_shape(ckpt.path, stored[name], got, shape)
    arrays = rule.transform.to_ours([ckpt.get(stored[n]) for n in rule.hf], our_shapes)
    for path, array in zip(rule.ours, arrays):
      flat[path] = np.asarray(array).astype(dtype)
  used = {n for rule in rules for n in rule.hf}
  unused = [n for n in stored if n not in used and not converter.is_ignored(n)]
  unused = _drop_tied_head(ckpt, cfg, table, stored, unused)
  if unused:
    raise errors.unexpected_tensors(
        ckpt.path, converter.model_type, sorted(stored[n] for n in unused))
  tree = unflatten_dict(flat, sep="/")
  tree = stack_layers(tree) if cfg.scan_layers else tree
  params = jax.tree.map(jnp.asarray, tree)
  _check_params(params, cfg, built)
  return params


def _per_layer(shapes: dict[str, Any]) -> dict[str, Any]:
  """Flat shapes of a scanned stack ('.../layers/...', leading L) in per-layer form, as
  `unstack_layers` would give ('.../layers_{i}/...')."""
  out = {}
  for path, shape in shapes.items():
    parts = path.split("/")
    if "layers" not in parts:
      out[path] = shape
      continue
    at = parts.index("layers")
    for i in range(shape.shape[0]):
      layer_path = "/".join(parts[:at] + [f"layers_{i}"] + parts[at + 1:])
      out[layer_path] = jax.ShapeDtypeStruct(shape.shape[1:], shape.dtype)
  return out


def _table_names(ckpt, converter, table) -> dict[str, str]:
  """Table name -> stored name of every tensor in the checkpoint.

  Applies the converter's aliases and, for checkpoints saved from the base model (no tensor
  under `base_prefix`), restores the prefix on every name but the output head's.
  """
  prefix = converter.base_prefix
  outside = {n for rule in table for n in rule.hf if not n.startswith(prefix)}
  names = ckpt.names()
  base_only = not any(converter.aliases.get(n, n).startswith(prefix) for n in names)
  out = {}
  for name in names:
    table_name = converter.aliases.get(name, name)
    if base_only and table_name not in outside:
      table_name = prefix + table_name
    out[table_name] = name
  return out


def _drop_tied_head(ckpt, cfg, table, stored, unused) -> list[str]:
  """Some tied checkpoints also store the output head; accept it when it equals the embedding."""
  if not cfg.tie_embeddings:
    return unused
  by_param = {rule.ours: rule.hf for rule in table}
  head, embedding = by_param.get((_HEAD,)), by_param.get((_EMBEDDING,))
  if head is None or embedding is None or head[0] not in unused or embedding[0] not in stored:
    return unused
  if not np.array_equal(ckpt.get(stored[head[0]]), ckpt.get(stored[embedding[0]])):
    raise errors.ConversionError(
        f"{ckpt.path}: {stored[head[0]]!r} differs from {stored[embedding[0]]!r}, but the config "
        "ties them (tie_word_embeddings=true)")
  return [n for n in unused if n != head[0]]


def _check_params(params: Any, cfg: ModelConfig, expected: dict[str, Any] | None = None) -> None:
  """Raises unless `params` has exactly the structure, shapes and dtypes `cfg` builds."""
  if expected is None:
    expected = flatten_dict(models.param_shapes(cfg), sep="/")
  try:
    got = flatten_dict(params, sep="/")
  except (TypeError, AttributeError) as e:
    raise errors.params_mismatch("structure", f"expected a nested dict of arrays ({e})") from None
  if set(got) != set(expected):
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    raise errors.params_mismatch("structure", f"missing {missing[:5]}, unexpected {extra[:5]}")
  for path, want in expected.items():
    have = got[path]
    if tuple(have.shape) != tuple(want.shape) or jnp.dtype(have.dtype) != jnp.dtype(want.dtype):
      raise errors.params_mismatch(
          path, f"{tuple(have.shape)} {have.dtype}, expected {tuple(want.shape)} {want.dtype}")
