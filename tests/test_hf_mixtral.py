"""research.hf.mixtral: Mixtral checkpoints against transformers."""

import numpy as np
import pytest

import research.hf
from hf_support import assert_parity, assert_round_trip, hf_model
from research import presets

# transformers' default grouped-mm expert kernel needs 16-byte-aligned strides, which these
# tiny CPU shapes lack; the eager expert loop computes the same function.
_SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
              num_experts_per_tok=2, experts_implementation="eager")


def test_logits_match_transformers(tmp_path):
  model, _ = assert_parity(hf_model("mixtral", **_SMALL), tmp_path)
  assert model.cfg.moe_experts == 4 and model.cfg.moe_top_k == 2 and model.cfg.moe_dropless


def test_round_trip_through_transformers(tmp_path):
  assert_round_trip(presets.get("mixtral-8x7b-smoke"), tmp_path, experts_implementation="eager")


def test_router_loss_weight_maps_both_ways():
  cfg = research.hf.config_from_hf({"model_type": "mixtral", **_SMALL, "router_aux_loss_coef": 0.02})
  assert cfg.moe_aux_weight == pytest.approx(0.02 * 2 / 2)
  assert research.hf.config_to_hf(cfg)["router_aux_loss_coef"] == pytest.approx(0.02)
  assert research.hf.config_from_hf(research.hf.config_to_hf(presets.get("mixtral-8x7b"))) \
      .moe_aux_weight == pytest.approx(presets.get("mixtral-8x7b").moe_aux_weight)


def test_dense_types_refuse_moe_and_capacity_routing_is_refused():
  with pytest.raises(ValueError, match="moe_experts=8"):
    research.hf.config_to_hf(presets.get("mixtral-8x7b"), model_type="llama")
  with pytest.raises(ValueError, match="moe_dropless=False"):
    research.hf.config_to_hf(presets.get("mixtral-8x7b", moe_dropless=False), model_type="mixtral")
