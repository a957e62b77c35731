"""research.hf.t5: T5 v1.0 and v1.1 checkpoints against transformers' T5ForConditionalGeneration."""

import numpy as np
import pytest
import safetensors
import torch
import transformers

import research.hf
from hf_support import PARITY_TOL
from research import presets
from research.models.registry import num_params
from hf_support import perturb
from seq2seq_support import (assert_round_trip, our_logits, reference_logits, relative_error,
                             seq2seq_batch)

_SMALL = dict(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=20)

# (config, whether the model has a head of its own, the (tied, scaled) head expected on load).
# transformers 5 scales by scale_decoder_outputs, which a T5Config takes from
# tie_word_embeddings, and ties the head unless the checkpoint stores another lm_head.weight.
CASES = {
    "v1_0_deeper_decoder": (dict(_SMALL, num_decoder_layers=3, feed_forward_proj="relu"), False,
                            (True, True)),
    # As google/t5-v1_1-*: a head of its own, no scaling. 6 heads of 8 dims on a 32-wide model,
    # as t5-v1_1-small's 6 x 64 on 512.
    "v1_1": (dict(_SMALL, num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
             True, (False, False)),
    # A v1.1 config built and saved by transformers 5: tie_word_embeddings true and
    # scale_decoder_outputs false in config.json, no lm_head.weight: tied, not scaled.
    "v1_1_built_by_transformers_5": (
        dict(_SMALL, feed_forward_proj="gated-gelu", tie_word_embeddings=False), False,
        (True, False)),
    # A head of its own under a scaling config: transformers 5 unties it and still scales.
    "own_head_scaled": (dict(_SMALL, feed_forward_proj="gated-gelu"), True, (False, True)),
}


def t5_reference(own_head: bool = False, scale: float = 0.1, **config):
  """A random-weight T5ForConditionalGeneration, eager fp32, every weight perturbed by
  scale * N(0, 1).

  transformers 5 ties a T5 built from a config to the shared embedding whatever
  tie_word_embeddings says (which sets scale_decoder_outputs); `own_head` gives it a head of
  its own, as v1.1 checkpoints have.
  """
  hf_config = transformers.T5Config(**config)
  model = transformers.T5ForConditionalGeneration._from_config(
      hf_config, attn_implementation="eager", dtype=torch.float32)
  if own_head:
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  return perturb(model, scale, seed=0)


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case, tmp_path):
  config, own_head, (tied, scaled) = CASES[case]
  reference = t5_reference(own_head, **config)
  reference.save_pretrained(tmp_path)
  with safetensors.safe_open(tmp_path / "model.safetensors", "np") as stored:
    assert ("lm_head.weight" in stored.keys()) == own_head  # transformers saves a tied head once
  model, params = research.hf.load(tmp_path)
  assert model.cfg.family == "encoder_decoder"
  assert (model.cfg.tie_embeddings, model.cfg.decoder_output_scaled) == (tied, scaled)
  batch = seq2seq_batch(model.cfg.vocab_size)
  err = relative_error(our_logits(model, params, batch), reference_logits(reference, batch), batch)
  assert err <= PARITY_TOL, f"relative logit error {err:.2e} > {PARITY_TOL}"


@pytest.mark.parametrize("name, overrides", [
    ("t5-small-smoke", dict(n_decoder_layers=3)),  # tied, scaled
    ("t5-v1_1-small-smoke", dict(scan_layers=False, head_dim=8)),  # untied, not scaled
    ("t5-v1_1-small-smoke", dict(tie_embeddings=True, scale_decoder_outputs=False)),
    ("t5-small-smoke", dict(tie_embeddings=False, scale_decoder_outputs=True)),
])
def test_our_params_round_trip_through_transformers(name, overrides, tmp_path):
  cfg = presets.get(name, **overrides)
  reference = assert_round_trip(cfg, tmp_path, transformers.T5ForConditionalGeneration)
  assert reference.config.num_decoder_layers == cfg.decoder_layers
  assert reference.config.scale_decoder_outputs == cfg.decoder_output_scaled
  loaded, _ = research.hf.load(tmp_path / "ours")
  assert loaded.cfg.tie_embeddings == cfg.tie_embeddings
  assert loaded.cfg.scale_decoder_outputs == cfg.scale_decoder_outputs


def test_cached_greedy_generation_matches_transformers(tmp_path):
  """Encode once, then our cached decoder (cross-attention K/V projected once) picks exactly
  the tokens transformers' generate picks."""
  from research.inference.sampling import SamplingConfig
  from research.inference.seq2seq import generate_seq2seq

  # transformers sizes its generation cache by num_layers, so both stacks are equally deep.
  # Perturbed more than the parity cases: near-initial weights greedily repeat one token.
  reference = t5_reference(own_head=True, scale=0.5, **dict(
      _SMALL, feed_forward_proj="gated-gelu", tie_word_embeddings=False))
  reference.save_pretrained(tmp_path)
  model, params = research.hf.load(tmp_path)
  batch = seq2seq_batch(model.cfg.vocab_size)
  with torch.no_grad():
    expected = reference.generate(
        torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"]),
        max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0,
        decoder_start_token_id=0)[:, 1:].numpy()
  assert len(set(expected.ravel())) > 5  # a model that decodes something, not one token
  ours = generate_seq2seq(model, params, batch["input_ids"], batch["attention_mask"],
                          SamplingConfig(max_new_tokens=10))
  np.testing.assert_array_equal(np.asarray(ours), expected)


def test_published_parameter_counts_equal_transformers():
  """t5-small, t5-base, t5-v1_1-small and switch-base-8 built by transformers from their
  published config.json values (on the meta device: nothing is allocated)."""
  def count(model, untied=False):
    n = sum(p.numel() for p in model.parameters())
    # A fresh transformers 5 T5 ties its head regardless; v1.1 checkpoints hold their own.
    return n + (model.lm_head.weight.numel() if untied else 0)

  with torch.device("meta"):
    t5_small = transformers.T5ForConditionalGeneration(transformers.T5Config())
    t5_base = transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=768, d_ff=3072, num_layers=12, num_heads=12))
    v1_1 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=512, d_ff=1024, d_kv=64, num_layers=8, num_heads=6,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False))
    switch = transformers.SwitchTransformersForConditionalGeneration(
        transformers.SwitchTransformersConfig(
            d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12, num_heads=12,
            num_experts=8, expert_capacity=64, num_sparse_encoder_layers=6,
            num_sparse_decoder_layers=6, dense_act_fn="relu", is_gated_act=False))
  assert count(t5_small) == num_params(presets.get("t5-small")) == 60_506_624
  assert count(t5_base) == num_params(presets.get("t5-base"))
  assert count(v1_1, untied=True) == num_params(presets.get("t5-v1_1-small")) == 76_961_152
  assert count(switch) == num_params(presets.get("switch-base-8"))


def test_config_reads_both_tying_spellings():
  old_v1_1 = research.hf.config_from_hf(
      {"model_type": "t5", **_SMALL, "feed_forward_proj": "gated-gelu",
       "tie_word_embeddings": False})
  assert (old_v1_1.tie_embeddings, old_v1_1.activation) == (False, "geglu_tanh")
  # transformers 5 writes tie_word_embeddings=true for every T5 and the scaling in
  # scale_decoder_outputs; from the config alone it builds a tied head (research.hf.load asks
  # the checkpoint whether it stores a head of its own).
  new_v1_1 = research.hf.config_from_hf(
      {"model_type": "t5", **_SMALL, "tie_word_embeddings": True, "scale_decoder_outputs": False})
  assert (new_v1_1.tie_embeddings, new_v1_1.decoder_output_scaled) == (True, False)
  untied_scaled = research.hf.config_from_hf(
      {"model_type": "t5", **_SMALL, "tie_word_embeddings": False, "scale_decoder_outputs": True})
  assert (untied_scaled.tie_embeddings, untied_scaled.decoder_output_scaled) == (False, True)
  v1_0 = research.hf.config_from_hf({"model_type": "t5", **_SMALL})
  assert v1_0.tie_embeddings and v1_0.activation == "relu" and v1_0.attn_scale == 1.0
  assert v1_0.scale_decoder_outputs is None and old_v1_1.scale_decoder_outputs is None
  assert v1_0.decoder_layers == 2 and v1_0.head_dim is None


def test_inexpressible_configs_are_refused_by_name():
  with pytest.raises(research.hf.ConversionError, match="feed_forward_proj='gated-gelu-x'"):
    research.hf.config_from_hf({"model_type": "t5", **_SMALL, "feed_forward_proj": "gated-gelu-x"})
  with pytest.raises(research.hf.ConversionError, match="activation='geglu'"):
    research.hf.config_to_hf(presets.get("t5-small-smoke", activation="geglu"), "t5")
  with pytest.raises(research.hf.ConversionError, match="ffn_dropout=0.0"):
    research.hf.config_to_hf(presets.get("t5-small-smoke", ffn_dropout=0.0), "t5")
  with pytest.raises(research.hf.ConversionError, match="family='encoder_decoder'"):
    research.hf.config_to_hf(presets.get("t5-small-smoke"), "llama")
  assert research.hf.config_to_hf(presets.get("t5-small-smoke"))["model_type"] == "t5"
