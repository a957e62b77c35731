"""LoRA adapters in the Hugging Face PEFT library's format, for the model types research.hf
converts with plain linear layers (llama, mistral, qwen2).

    export_lora("runs/lora/adapter", "out/peft")                 # an adapter directory
    python -m research.peft.export runs/lora/adapter out/peft [--base NAME_OR_PATH]

writes what `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "out/peft")`
reads (PEFT's developer guide, "PEFT checkpoint format"):
- `adapter_model.safetensors`: for every adapted projection with HF name `X.weight` (from
  research.hf's tensor tables), `base_model.model.X.lora_A.weight` [r, in] and
  `base_model.model.X.lora_B.weight` [out, r], torch nn.Linear layouts of our A [*in, r] and
  B [r, *out];
- `adapter_config.json`: peft_type LORA, task_type CAUSAL_LM, r, lora_alpha (PEFT also scales
  by lora_alpha / r), lora_dropout, and target_modules: the adapted module names when every
  layer has them, else a regular expression naming exactly the adapted modules.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import jax
import numpy as np
from flax.traverse_util import flatten_dict
from safetensors.numpy import save_file

from research.config.model import ModelConfig
from research.config.peft import PeftConfig
from research.hf import convert, registry, tensors
from research.layers.stack import unstack_layers
from research.models import registry as models
from research.peft import io, lora

PREFIX = "base_model.model."


def lora_tensors(model_cfg: ModelConfig, lora_params, model_type: str | None = None):
  """(PEFT-format tensors, HF module names adapted, model_type) of LoRA parameters."""
  hf_config = convert.config_to_hf(model_cfg, model_type)
  converter = registry.get(hf_config["model_type"])
  per_layer = lambda tree: unstack_layers(tree) if model_cfg.scan_layers else tree  # noqa: E731
  base_paths = flatten_dict(jax.eval_shape(per_layer, models.param_shapes(model_cfg)), sep="/")
  rules = {r.ours[0]: r for r in tensors.applicable(converter.tensors(model_cfg), base_paths,
                                                   converter.model_type)}
  flat = flatten_dict(per_layer(lora_params), sep="/")
  out, modules = {}, []
  for module in sorted({p.rsplit("/", 1)[0] for p in flat if p.endswith("/" + lora.A)}):
    rule = rules.get(module + "/kernel")
    if rule is None or not isinstance(rule.transform, tensors.Dense) or len(rule.hf) != 1:
      raise ValueError(f"LoRA on {module} has no plain linear layer in {converter.model_type}'s "
                       "tensor table; only nn.Linear weights export to the PEFT format")
    name = rule.hf[0].removesuffix(".weight")
    a, b = np.asarray(flat[module + "/" + lora.A]), np.asarray(flat[module + "/" + lora.B])
    out[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, a.shape[-1]).T)
    out[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(b.reshape(b.shape[0], -1).T)
    modules.append(name)
  return out, modules, converter.model_type


def _target_modules(modules: list[str], n_layers: int):
  """Module names when each is adapted in every layer (PEFT matches name suffixes), else a
  regular expression PEFT full-matches against module names."""
  leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
  per_leaf = {leaf: [m for m in modules if m.rsplit(".", 1)[-1] == leaf] for leaf in leaves}
  uniform = all(len(v) == n_layers or (len(v) == 1 and ".layers." not in v[0])
                for v in per_leaf.values())
  if uniform:
    return leaves
  return "^(?:" + "|".join(re.escape(m) for m in modules) + ")$"


def export_lora(adapter_dir: str | pathlib.Path, out_dir: str | pathlib.Path,
                base_name_or_path: str | None = None, model_type: str | None = None) -> pathlib.Path:
  """Writes an adapter directory's LoRA (research.peft.save_adapter) in the PEFT format."""
  cfg, model_cfg, params, base = io.load_adapter(adapter_dir)
  if cfg.method != "lora":
    raise ValueError(f"{adapter_dir} holds a peft.method={cfg.method!r} adapter; only LoRA exports")
  return write(out_dir, cfg, model_cfg, params, base_name_or_path or base.get("path"), model_type)


def write(out_dir, cfg: PeftConfig, model_cfg: ModelConfig, lora_params, base_name_or_path=None,
          model_type: str | None = None) -> pathlib.Path:
  out_dir = pathlib.Path(out_dir)
  weights, modules, model_type = lora_tensors(model_cfg, lora_params, model_type)
  out_dir.mkdir(parents=True, exist_ok=True)
  save_file(weights, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.rank, "lora_alpha": cfg.alpha,
      "lora_dropout": cfg.dropout, "target_modules": _target_modules(modules, model_cfg.n_layers),
      "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
      "use_rslora": False, "use_dora": False, "modules_to_save": None,
      "layers_to_transform": None, "revision": None, "base_model_name_or_path": base_name_or_path,
      "auto_mapping": None,
  }
  (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  return out_dir


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m research.peft.export", description=__doc__.split("\n")[0])
  parser.add_argument("adapter_dir", help="an adapter directory (a LoRA run's adapter/)")
  parser.add_argument("out_dir")
  parser.add_argument("--base", help="base_model_name_or_path to record (default: the adapter's base)")
  parser.add_argument("--model-type", help="llama, mistral or qwen2 (default: the first that fits)")
  args = parser.parse_args(argv)
  print(export_lora(args.adapter_dir, args.out_dir, args.base, args.model_type))
  return 0


if __name__ == "__main__":
  sys.exit(main())
