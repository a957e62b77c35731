"""The errors of Hugging Face conversion, worded in one place.

Every message names what is wrong (the tensor, the config field, the file), the value found
and what was expected, so a failed conversion says how to fix it without a debugger.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class ConversionError(ValueError):
  """A checkpoint or config that cannot be converted exactly."""


def unsupported_model_type(model_type: Any, supported: Iterable[str]) -> ConversionError:
  return ConversionError(
      f"model_type={model_type!r} is not supported by research.hf; supported model types: "
      + ", ".join(sorted(supported)))


def config_field(model_type: str, field: str, value: Any, why: str) -> ConversionError:
  """An HF config value our ModelConfig cannot express."""
  return ConversionError(f"{model_type} config: {field}={value!r} is not supported: {why}")


def not_expressible(cfg_name: str, model_type: str, reasons: Sequence[str]) -> ConversionError:
  """Our ModelConfig cannot be written as an HF config of `model_type`."""
  return ConversionError(
      f"{cfg_name} cannot be written as a {model_type!r} checkpoint: " + "; ".join(reasons))


def no_model_type_fits(reasons: dict[str, Sequence[str]]) -> ConversionError:
  lines = [f"  {t}: {'; '.join(r)}" for t, r in reasons.items()]
  return ConversionError(
      "no supported Hugging Face model type can express this ModelConfig exactly:\n"
      + "\n".join(lines))


def missing_tensor(path: Any, name: str, shape: Sequence[int], target: str) -> ConversionError:
  return ConversionError(
      f"{path}: tensor {name!r} is missing (expected shape {tuple(shape)}, for our {target})")


def wrong_shape(
    path: Any, name: str, got: Sequence[int], expected: Sequence[int]
) -> ConversionError:
  return ConversionError(
      f"{path}: tensor {name!r} has shape {tuple(got)}, expected {tuple(expected)} "
      "from the checkpoint's config.json")


def unexpected_tensors(path: Any, model_type: str, names: Sequence[str]) -> ConversionError:
  shown = ", ".join(repr(n) for n in names[:10])
  more = f" and {len(names) - 10} more" if len(names) > 10 else ""
  return ConversionError(
      f"{path}: {len(names)} tensor(s) have no place in a {model_type} model of this config: "
      f"{shown}{more}")


def pickled_only(path: Any, files: Sequence[str]) -> ConversionError:
  return ConversionError(
      f"{path} holds only pickled weights ({', '.join(files)}). research.hf reads safetensors "
      "only: unpickling a file can run arbitrary code. Convert it once, where you trust the "
      "file: `transformers.AutoModelForCausalLM.from_pretrained(path).save_pretrained(out)` "
      "(transformers >= 5 writes safetensors; 4.x needs safe_serialization=True), then load `out`.")


def params_mismatch(what: str, detail: str) -> ConversionError:
  return ConversionError(f"params do not match the model's config: {what}: {detail}")
