"""research.hf.convert: the public API's config mapping, dtype handling and error messages."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

import research.hf
from hf_support import hf_model
from research import presets
from research.config import ModelConfig
from research.models import registry
from research.models.registry import num_params

_SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2)

_PRESET_TYPES = {"gpt2": "gpt2", "llama": "llama", "yi": "llama", "mistral": "mistral",
                 "qwen2": "qwen2", "falcon": "falcon", "bloom": "bloom", "pythia": "gpt_neox",
                 "gpt-neox": "gpt_neox", "mixtral": "mixtral", "t5": "t5",
                 "switch": "switch_transformers", "bert": "bert", "roberta": "roberta",
                 "albert": "albert"}
_SEQ2SEQ_TYPES = ("t5", "switch_transformers")
# GLM and ChatGLM ship as remote code, not as transformers model types.
_NO_HF_TYPE = ("glm-", "chatglm")
_ARCHITECTURE = ("vocab_size", "d_model", "n_layers", "n_heads", "num_kv_heads", "dim_per_head",
                 "ffn_hidden", "max_seq_len", "norm", "norm_eps", "norm_bias", "activation",
                 "position", "rope_theta", "rope_dims", "rope_scaling", "rope_scaling_factor",
                 "qkv_bias", "out_bias", "mlp_bias", "parallel_block", "parallel_norms",
                 "embed_norm", "tie_embeddings", "sliding_window", "has_final_norm")


@pytest.mark.parametrize(
    "name", [n for n in presets.names(include_smoke=False) if not n.startswith(_NO_HF_TYPE)])
def test_preset_as_transformers_model_has_our_parameter_count(name):
  cfg = presets.get(name)
  hf_config = research.hf.config_to_hf(cfg)
  assert hf_config["model_type"] == next(t for p, t in _PRESET_TYPES.items() if name.startswith(p))
  back = research.hf.config_from_hf(hf_config)
  assert [getattr(back, f) for f in _ARCHITECTURE] == [getattr(cfg, f) for f in _ARCHITECTURE]
  if cfg.family == "encoder":
    fields = ("type_vocab_size", "position_padding_idx", "embed_dim", "albert_sharing", "pooler",
              "encoder_heads")
    assert [getattr(back, f) for f in fields] == [getattr(cfg, f) for f in fields]
  config = transformers.AutoConfig.for_model(**hf_config)
  auto = (transformers.AutoModelForSeq2SeqLM if hf_config["model_type"] in _SEQ2SEQ_TYPES
          else transformers.AutoModelForCausalLM)
  with torch.device("meta"):  # nothing allocated
    if cfg.family == "encoder":  # a base model (BertModel, ...): the class config.json names
      model = getattr(transformers, hf_config["architectures"][0])._from_config(config)
    else:
      model = auto.from_config(config)
  count = sum(p.numel() for p in model.parameters())
  head = model.get_output_embeddings()
  if head is not None and not cfg.tie_embeddings and head.weight is model.get_input_embeddings().weight:
    count += head.weight.numel()  # transformers 5 ties a fresh T5 whatever its config says
  assert count == num_params(cfg)


def test_presets_without_a_transformers_type_are_refused_by_family():
  for name in presets.names(include_smoke=False):
    if name.startswith(_NO_HF_TYPE):
      with pytest.raises(research.hf.ConversionError, match="family='prefix_lm'"):
        research.hf.config_to_hf(presets.get(name))


@pytest.mark.parametrize("name", ["llama3.1-8b", "qwen2-7b", "pythia-1b"])
def test_transformers_4_rope_keys_alone_describe_the_same_rope(name):
  cfg = presets.get(name)
  legacy = {k: v for k, v in research.hf.config_to_hf(cfg).items() if k != "rope_parameters"}
  back = research.hf.config_from_hf(legacy)
  fields = ("rope_theta", "rope_dims", "rope_scaling", "rope_scaling_factor",
            "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len")
  assert [getattr(back, f) for f in fields] == [getattr(cfg, f) for f in fields]


def _hf_checkpoint(path, **config):
  hf_model("llama", **{**_SMALL, **config}).save_pretrained(path)
  return load_file(path / "model.safetensors")


def _rewrite(path, tensors):
  save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
  _hf_checkpoint(tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
  with pytest.raises(research.hf.ConversionError,
                     match="'mamba' is not supported.*bloom, falcon, gpt2, gpt_neox, llama"):
    research.hf.load(tmp_path)


def test_missing_tensor_is_named_with_its_shape(tmp_path):
  tensors = _hf_checkpoint(tmp_path)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  _rewrite(tmp_path, tensors)
  message = r"'model.layers.1.mlp.up_proj.weight' is missing \(expected shape \(96, 64\)"
  with pytest.raises(research.hf.ConversionError, match=message):
    research.hf.load(tmp_path)


def test_misshaped_tensor_is_named_with_both_shapes(tmp_path):
  tensors = _hf_checkpoint(tmp_path)
  tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)
  _rewrite(tmp_path, tensors)
  with pytest.raises(research.hf.ConversionError,
                     match=r"k_proj.weight' has shape \(64, 64\), expected \(32, 64\)"):
    research.hf.load(tmp_path)


def test_unexpected_tensor_is_named_and_buffers_are_ignored(tmp_path):
  tensors = _hf_checkpoint(tmp_path)
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(8, np.float32)
  _rewrite(tmp_path, tensors)
  research.hf.load(tmp_path)
  tensors["model.layers.0.self_attn.q_norm.weight"] = np.ones(16, np.float32)
  _rewrite(tmp_path, tensors)
  with pytest.raises(research.hf.ConversionError, match="q_norm.weight"):
    research.hf.load(tmp_path)


def test_stored_head_of_a_tied_model_must_equal_the_embedding(tmp_path):
  tensors = _hf_checkpoint(tmp_path, tie_word_embeddings=True)
  assert "lm_head.weight" not in tensors
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
  _rewrite(tmp_path, tensors)
  research.hf.load(tmp_path)
  tensors["lm_head.weight"] += 1.0
  _rewrite(tmp_path, tensors)
  with pytest.raises(research.hf.ConversionError, match="differs from 'model.embed_tokens.weight'"):
    research.hf.load(tmp_path)


def test_load_overrides_and_dtypes(tmp_path):
  reference = hf_model("llama", **_SMALL)
  reference.to(torch.bfloat16).save_pretrained(tmp_path)
  model, params = research.hf.load(tmp_path)
  assert (model.cfg.param_dtype, model.cfg.dtype) == ("bfloat16", "bfloat16")
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  model, params = research.hf.load(tmp_path, scan_layers=False, param_dtype="float32", remat="full")
  assert (model.cfg.scan_layers, model.cfg.dtype, model.cfg.remat) == (False, "float32", "full")
  shapes = registry.param_shapes(model.cfg)
  assert jax.tree.structure(params) == jax.tree.structure(shapes)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  np.testing.assert_array_equal(  # bfloat16 -> float32 is exact
      params["blocks"]["layers_1"]["mlp_norm"]["scale"],
      reference.model.layers[1].post_attention_layernorm.weight.detach().float().numpy())
  with pytest.raises(ValueError, match="did you mean scan_layers"):
    research.hf.load(tmp_path, scan_layer=False)


def test_save_refuses_params_of_another_config(tmp_path):
  cfg = presets.get("llama2-7b-smoke")
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        registry.param_shapes(cfg.replace(d_ff=64)))
  with pytest.raises(research.hf.ConversionError, match="mlp/wi_gate/kernel"):
    research.hf.save(registry.build(cfg), params, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_config_no_family_expresses_names_each_reason():
  cfg = ModelConfig(norm_placement="post", position="t5")
  with pytest.raises(research.hf.ConversionError) as error:
    research.hf.config_to_hf(cfg)
  for model_type in research.hf.supported():
    assert f"  {model_type}: " in str(error.value)
  assert "norm_placement='post'" in str(error.value)
  with pytest.raises(research.hf.ConversionError, match="embed_scale=True"):
    research.hf.config_to_hf(presets.get("llama2-7b-smoke", embed_scale=True))


def test_config_of_a_named_type_must_express_the_config():
  with pytest.raises(research.hf.ConversionError, match="'gpt2' checkpoint: .*position='rope'"):
    research.hf.config_to_hf(presets.get("llama2-7b-smoke"), "gpt2")


def test_loading_does_not_import_torch(tmp_path):
  _hf_checkpoint(tmp_path)
  code = ("import sys, research.hf; research.hf.load(sys.argv[1]); "
          "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
  root = pathlib.Path(__file__).resolve().parents[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)}
  subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env)
