"""research.peft.export: a LoRA adapter in the PEFT library's format is named after
LlamaForCausalLM's modules, shaped as their lora_A/lora_B layers, and computes our function."""

from __future__ import annotations

import json
import re

import flax.linen as nn
import jax
import torch
import transformers
from safetensors.numpy import load_file

import research.hf
from hf_support import PARITY_TOL, our_logits, padded_batch, reference_logits, relative_error
from research import peft
from research.config.peft import PeftConfig
from research.models import registry
from research.peft import export
from support import tiny

# A LLaMA: RMSNorm, SwiGLU, RoPE, GQA, untied head.
CFG = tiny(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96,
           tie_embeddings=False)
TARGETS = ("attention", "ffn", "lm_head")


def _lora(targets=TARGETS):
  tuned = peft.build(PeftConfig(method="lora", rank=4, alpha=8.0, targets=targets), registry.build(CFG))
  trained = nn.unbox(tuned.init(jax.random.key(1)))
  leaves, treedef = jax.tree.flatten(trained)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  trained = jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  return tuned, trained


def test_peft_format_names_and_shapes_follow_llama_modules(tmp_path):
  tuned, trained = _lora()
  export.write(tmp_path, tuned.cfg, CFG, trained, base_name_or_path="base")
  config = json.loads((tmp_path / "adapter_config.json").read_text())
  assert (config["peft_type"], config["task_type"], config["r"], config["lora_alpha"]) == (
      "LORA", "CAUSAL_LM", 4, 8.0)
  assert config["target_modules"] == sorted(
      ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"])
  tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**research.hf.config_to_hf(CFG)))
  linears = {name: m for name, m in hf.named_modules() if isinstance(m, torch.nn.Linear)}
  expected = {}
  for name, module in linears.items():
    expected[f"base_model.model.{name}.lora_A.weight"] = (4, module.in_features)
    expected[f"base_model.model.{name}.lora_B.weight"] = (module.out_features, 4)
  assert {k: v.shape for k, v in tensors.items()} == expected


def test_peft_format_computes_the_adapted_model(tmp_path):
  # W + (alpha / r) B A applied to the transformers model with the exported tensors gives the
  # logits of our LoRA model: the layouts (transposes, head splits) are right.
  tuned, trained = _lora()
  base = registry.init_params(CFG, jax.random.key(0))
  research.hf.save(registry.build(CFG), base, tmp_path / "base")
  export.write(tmp_path / "adapter", tuned.cfg, CFG, trained)
  tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", attn_implementation="eager").eval()
  modules = dict(hf.named_modules())
  with torch.no_grad():
    for key, a in tensors.items():
      if ".lora_A." not in key:
        continue
      name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
      b = tensors[key.replace("lora_A", "lora_B")]
      modules[name].weight += torch.from_numpy(tuned.cfg.scale * (b @ a))
  ids, mask, positions = padded_batch(CFG.vocab_size)
  ours = our_logits(tuned.model, tuned.combine(base, trained), ids, mask, positions)
  assert relative_error(ours, reference_logits(hf, ids, mask, positions), mask) <= PARITY_TOL


def test_target_modules_name_exactly_the_adapted_modules():
  every_layer = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
  assert export._target_modules(every_layer + ["lm_head"], n_layers=2) == ["lm_head", "q_proj", "v_proj"]
  # Some layers only: a regular expression PEFT full-matches, naming exactly these modules.
  some = ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
  pattern = export._target_modules(some, n_layers=2)
  assert all(re.fullmatch(pattern, n) for n in some)
  assert not any(re.fullmatch(pattern, n) for n in set(every_layer) - set(some))
