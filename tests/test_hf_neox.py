"""research.hf.neox: GPT-NeoX / Pythia checkpoints (per-head fused qkv, partial rotary)."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import research.hf
from hf_support import assert_parity, assert_round_trip, hf_model
from research import presets

_SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4)

CASES = {
    # Parallel residual with two norms, rotary on a quarter of each head (transformers' default).
    "neox_parallel": _SMALL,
    # Serial residual, no attention biases, tied head, half the head rotated.
    "neox_serial": dict(_SMALL, use_parallel_residual=False, attention_bias=False,
                        tie_word_embeddings=True,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000.0,
                                         "partial_rotary_factor": 0.5}),
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case, tmp_path):
  model, _ = assert_parity(hf_model("gpt_neox", **CASES[case]), tmp_path)
  assert model.cfg.parallel_block == CASES[case].get("use_parallel_residual", True)


def test_round_trip_through_transformers(tmp_path):
  path = assert_round_trip(presets.get("pythia-160m-smoke"), tmp_path)
  # Saved under the name older and newer transformers both load.
  assert "embed_out.weight" in load_file(path / "model.safetensors")


def test_head_saved_as_lm_head_loads(tmp_path):
  reference = hf_model("gpt_neox", **_SMALL)
  reference.save_pretrained(tmp_path)
  tensors = load_file(tmp_path / "model.safetensors")
  tensors["lm_head.weight"] = tensors.pop("embed_out.weight")
  save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
  _, params = research.hf.load(tmp_path)
  np.testing.assert_array_equal(params["lm_head"]["kernel"], tensors["lm_head.weight"].T)


def test_old_rotary_keys_are_read():
  cfg = research.hf.config_from_hf({"model_type": "gpt_neox", **_SMALL, "rotary_pct": 0.5,
                                    "rotary_emb_base": 500})
  assert (cfg.rope_fraction, cfg.rope_theta, cfg.rope_dims) == (0.5, 500.0, 8)


def test_odd_rotary_dims_are_refused():
  with pytest.raises(research.hf.ConversionError, match="rotary_pct"):
    research.hf.config_from_hf({"model_type": "gpt_neox", **_SMALL, "rotary_pct": 0.2})
