"""research.hf.gpt2: GPT-2 checkpoints (Conv1D weights, fused c_attn) against transformers."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import research.hf
from hf_support import assert_parity, assert_round_trip, hf_model
from research import presets

_SMALL = dict(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=32)

CASES = {
    "gpt2": _SMALL,
    # Unscaled scores, a non-default FFN width and activation, an untied head.
    "gpt2_variants": dict(_SMALL, scale_attn_weights=False, n_inner=80, activation_function="relu",
                          tie_word_embeddings=False),
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case, tmp_path):
  assert_parity(hf_model("gpt2", **CASES[case]), tmp_path)


def test_round_trip_through_transformers(tmp_path):
  assert_round_trip(presets.get("gpt2-smoke"), tmp_path)


def test_original_layout_without_prefix_and_with_mask_buffers_loads(tmp_path):
  """The original GPT-2 files were saved from GPT2Model: no 'transformer.' prefix, and each
  layer carries its causal-mask buffers attn.bias and attn.masked_bias."""
  reference = hf_model("gpt2", **_SMALL)
  reference.save_pretrained(tmp_path / "hf")
  tensors = load_file(tmp_path / "hf" / "model.safetensors")
  base = {k.removeprefix("transformer."): v for k, v in tensors.items()}
  for i in range(2):
    base[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
    base[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
  save_file(base, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
  _, params = research.hf.load(tmp_path / "hf")
  np.testing.assert_array_equal(params["embed"]["tokens"]["embedding"],
                                tensors["transformer.wte.weight"])


@pytest.mark.parametrize("field", ["scale_attn_by_inverse_layer_idx", "add_cross_attention"])
def test_inexpressible_flags_are_named(field):
  with pytest.raises(research.hf.ConversionError, match=f"{field}=True"):
    research.hf.config_from_hf({"model_type": "gpt2", **_SMALL, field: True})
