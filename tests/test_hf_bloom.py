"""research.hf.bloom: BLOOM checkpoints (ALiBi, embedding LayerNorm, per-head fused qkv)."""

import pytest

import research.hf
from hf_support import assert_parity, assert_round_trip, hf_model
from research import presets

CASES = {
    "bloom": dict(vocab_size=128, hidden_size=64, n_layer=2, n_head=4),
    # Six heads: ALiBi slopes for a head count that is not a power of two; untied head.
    "bloom_six_heads_untied": dict(vocab_size=128, hidden_size=48, n_layer=2, n_head=6,
                                   tie_word_embeddings=False),
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case, tmp_path):
  model, _ = assert_parity(hf_model("bloom", **CASES[case]), tmp_path)
  assert model.cfg.position == "alibi" and model.cfg.embed_norm


def test_round_trip_through_transformers(tmp_path):
  assert_round_trip(presets.get("bloom-560m-smoke"), tmp_path)


def test_residual_from_the_normed_input_is_refused():
  with pytest.raises(research.hf.ConversionError,
                     match="apply_residual_connection_post_layernorm=True"):
    research.hf.config_from_hf({"model_type": "bloom", **CASES["bloom"],
                                "apply_residual_connection_post_layernorm": True})
