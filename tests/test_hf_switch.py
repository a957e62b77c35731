"""research.hf.switch: Switch Transformers checkpoints against transformers."""

import jax
import numpy as np
import pytest
import torch
import transformers

import research.hf
from hf_support import PARITY_TOL
from research import presets
from hf_support import perturb
from seq2seq_support import (assert_round_trip, our_logits, reference_logits, relative_error,
                             seq2seq_batch)

# Four encoder layers with sparse ones at 1 and 3, two decoder layers with a sparse one at 1.
_SMALL = dict(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=2,
              num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
              num_experts=4, num_sparse_encoder_layers=2, num_sparse_decoder_layers=1)


def _loaded(tmp_path, **config):
  reference = perturb(transformers.SwitchTransformersForConditionalGeneration._from_config(
      transformers.SwitchTransformersConfig(**{**_SMALL, **config}), attn_implementation="eager",
      dtype=torch.float32), seed=0)
  reference.save_pretrained(tmp_path)
  model, params = research.hf.load(tmp_path)
  return reference, model, params


def test_logits_match_transformers(tmp_path):
  reference, model, params = _loaded(tmp_path, expert_capacity=64)
  cfg = model.cfg
  assert (cfg.moe_experts, cfg.moe_top_k, cfg.moe_every, cfg.moe_expert_capacity) == (4, 1, 2, 64)
  batch = seq2seq_batch(cfg.vocab_size)
  err = relative_error(our_logits(model, params, batch), reference_logits(reference, batch), batch)
  assert err <= PARITY_TOL, f"relative logit error {err:.2e} > {PARITY_TOL}"


def test_capacity_drops_the_same_tokens(tmp_path):
  """Two slots per expert and sequence: most tokens overflow, in sequence order on both sides."""
  reference, model, params = _loaded(tmp_path, expert_capacity=2)
  batch = seq2seq_batch(model.cfg.vocab_size)
  batch["attention_mask"][:] = 1  # transformers lets padding claim capacity; we do not
  batch["decoder_attention_mask"][:] = 1
  inputs = {k: np.asarray(v, np.int32) for k, v in batch.items()}
  _, state = jax.jit(lambda p: model.apply({"params": p}, **inputs, mutable=["moe"]))(params)
  dropped = state["moe"]["encoder"]["blocks"]["layers"]["block_1"]["moe"]["dropped_fraction"][0]
  assert np.all(np.asarray(dropped) > 0.3)
  err = relative_error(our_logits(model, params, batch), reference_logits(reference, batch), batch)
  assert err <= PARITY_TOL, f"relative logit error {err:.2e} > {PARITY_TOL}"


def test_round_trip_through_transformers(tmp_path):
  assert_round_trip(presets.get("switch-base-8-smoke"), tmp_path,
                    transformers.SwitchTransformersForConditionalGeneration)


def test_router_loss_weights_map_both_ways():
  cfg = research.hf.config_from_hf({"model_type": "switch_transformers", **_SMALL})
  assert (cfg.moe_aux_weight, cfg.moe_z_weight) == (pytest.approx(0.001 / 2),) * 2
  out = research.hf.config_to_hf(presets.get("switch-base-8"))
  assert out["model_type"] == "switch_transformers"
  assert out["router_aux_loss_coef"] == pytest.approx(0.001)
  assert out["num_sparse_encoder_layers"] == 6
  assert research.hf.config_from_hf(out).moe_every == 2


@pytest.mark.parametrize("changes, message", [
    (dict(num_sparse_encoder_layers=1), "num_sparse_encoder_layers=1"),  # sparse step 4
    (dict(num_sparse_decoder_layers=2), "decoder's sparse step 1 differs"),
    (dict(router_bias=True), "router_bias=True"),
])
def test_inexpressible_layouts_are_refused(changes, message):
  with pytest.raises(research.hf.ConversionError, match=message):
    research.hf.config_from_hf({"model_type": "switch_transformers", **_SMALL, **changes})


def test_capacity_factor_routing_cannot_be_written():
  with pytest.raises(research.hf.ConversionError, match="moe_expert_capacity=None"):
    research.hf.config_to_hf(presets.get("switch-base-8-smoke", moe_expert_capacity=None),
                             "switch_transformers")


def test_scaling_apart_from_tying_cannot_be_written():
  """Switch ties and scales by one flag, tie_word_embeddings; only T5 sets them apart."""
  with pytest.raises(research.hf.ConversionError, match="scale_decoder_outputs=False"):
    research.hf.config_to_hf(presets.get("switch-base-8-smoke", scale_decoder_outputs=False),
                             "switch_transformers")
