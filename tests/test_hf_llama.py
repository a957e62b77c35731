"""research.hf.llama: LLaMA, Mistral and Qwen2 checkpoints against transformers."""

import numpy as np
import pytest

import research.hf
from hf_support import (assert_parity, assert_round_trip, hf_model, our_logits, padded_batch,
                        reference_logits, relative_error)
from research import presets

_SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2)

CASES = {
    "llama_gqa": ("llama", dict(_SMALL, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                         "rope_theta": 500.0})),
    # Biases everywhere, tied head, a head_dim that is not hidden / heads, Llama 3.1 RoPE.
    "llama_bias_tied_llama3": ("llama", dict(
        _SMALL, attention_bias=True, mlp_bias=True, tie_word_embeddings=True, head_dim=32,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})),
    "mistral_window": ("mistral", dict(_SMALL, sliding_window=4)),
    "qwen2": ("qwen2", dict(_SMALL, tie_word_embeddings=True)),
    "qwen2_window": ("qwen2", dict(_SMALL, use_sliding_window=True, sliding_window=5,
                                   max_window_layers=0)),
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case, tmp_path):
  model_type, config = CASES[case]
  model, _ = assert_parity(hf_model(model_type, **config), tmp_path)
  assert model.cfg.scan_layers


def test_config_reads_the_architecture(tmp_path):
  qwen = research.hf.config_from_hf({"model_type": "qwen2", **_SMALL})
  assert (qwen.qkv_bias, qwen.out_bias, qwen.sliding_window) == (True, False, None)
  mistral = research.hf.config_from_hf({"model_type": "mistral", **_SMALL, "sliding_window": 4})
  assert mistral.sliding_window == 4 and mistral.activation == "swiglu"
  old_style = research.hf.config_from_hf({  # transformers 4 spelling of RoPE
      "model_type": "llama", **_SMALL, "rope_theta": 5e5,
      "rope_scaling": {"type": "linear", "factor": 4.0}})
  assert (old_style.rope_theta, old_style.rope_scaling, old_style.rope_scaling_factor) == (
      5e5, "linear", 4.0)


def test_sliding_window_is_exercised(tmp_path):
  """The window of the Mistral case cuts in: dropping it changes the logits."""
  model_type, config = CASES["mistral_window"]
  reference = hf_model(model_type, **config)
  reference.save_pretrained(tmp_path)
  model, params = research.hf.load(tmp_path, sliding_window=None)
  ids, mask, positions = padded_batch(model.cfg.vocab_size)
  err = relative_error(our_logits(model, params, ids, mask, positions),
                       reference_logits(reference, ids, mask, positions), mask)
  assert err > 1e-2


@pytest.mark.parametrize("name, overrides", [
    ("llama3.1-8b-smoke", dict(scan_layers=False)),
    ("mistral-7b-smoke", dict(sliding_window=4)),
    ("qwen2-0.5b-smoke", {}),
])
def test_our_params_round_trip_through_transformers(name, overrides, tmp_path):
  assert_round_trip(presets.get(name, **overrides), tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("rope_parameters", {"rope_type": "yarn", "factor": 2.0}, "rope_parameters.rope_type='yarn'"),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}, "rope_scaling.type='dynamic'"),
    ("hidden_act", "gelu_fast", "hidden_act='gelu_fast'"),
])
def test_inexpressible_config_values_are_named(field, value, message):
  with pytest.raises(research.hf.ConversionError, match=message.replace("(", r"\(")):
    research.hf.config_from_hf({"model_type": "llama", **_SMALL, field: value})


def test_qwen2_window_on_some_layers_only_is_refused():
  with pytest.raises(research.hf.ConversionError, match="layer_types"):
    research.hf.config_from_hf({"model_type": "qwen2", **_SMALL, "use_sliding_window": True,
                                "max_window_layers": 1})


def test_llama_cannot_write_a_sliding_window_so_mistral_does():
  cfg = presets.get("llama2-7b-smoke", sliding_window=8)
  assert research.hf.config_to_hf(cfg)["model_type"] == "mistral"
  with pytest.raises(research.hf.ConversionError, match="sliding_window=8"):
    research.hf.config_to_hf(cfg, "llama")
  np.testing.assert_equal(research.hf.config_to_hf(cfg)["sliding_window"], 8)


def test_cached_greedy_generation_matches_transformers(tmp_path):
  """End to end: the loaded Mistral decodes with our KV cache exactly as transformers does,
  the sliding window cutting in across the cache."""
  import torch

  from research.inference.generate import generate
  from research.inference.sampling import SamplingConfig

  model_type, config = CASES["mistral_window"]
  reference = hf_model(model_type, **config)
  reference.save_pretrained(tmp_path)
  model, params = research.hf.load(tmp_path)
  ids = np.random.default_rng(0).integers(0, config["vocab_size"], (1, 6))
  expected = reference.generate(
      torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long),
      max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)[0, 6:]
  ours = generate(model, params, ids.astype(np.int32),
                  sampling=SamplingConfig(max_new_tokens=10, temperature=0.0))
  np.testing.assert_array_equal(np.asarray(ours)[0], expected.numpy())
