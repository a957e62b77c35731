"""research.hf.falcon: both Falcon architectures, and the serial and multi-head variants."""

import pytest

import research.hf
from hf_support import assert_parity, assert_round_trip, hf_model
from research import presets

_SMALL = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)

CASES = {
    # Falcon-7B: multi-query, one norm shared by the parallel attention and MLP.
    "falcon7b_style": (_SMALL, dict(n_kv_heads=1, parallel_block=True, parallel_norms=1)),
    # Falcon-40B: new decoder architecture, grouped kv heads, ln_attn and ln_mlp.
    "falcon40b_style": (dict(_SMALL, new_decoder_architecture=True, num_kv_heads=2),
                        dict(n_kv_heads=2, parallel_block=True, parallel_norms=2)),
    # New architecture with a single shared norm, and biases.
    "new_arch_one_norm": (dict(_SMALL, new_decoder_architecture=True, num_kv_heads=2,
                               num_ln_in_parallel_attn=1, bias=True),
                          dict(n_kv_heads=2, parallel_block=True, parallel_norms=1)),
    # Old architecture, multi-head ([N, 3, H] qkv), serial attention then MLP, untied head.
    "serial_multi_head": (dict(_SMALL, multi_query=False, parallel_attn=False, bias=True,
                               tie_word_embeddings=False, ffn_hidden_size=96),
                          dict(n_kv_heads=4, parallel_block=False)),
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case, tmp_path):
  config, expected = CASES[case]
  model, _ = assert_parity(hf_model("falcon", **config), tmp_path)
  for field, value in expected.items():
    assert getattr(model.cfg, field) == value, field


_BIASES = dict(qkv_bias=True, out_bias=True, mlp_bias=True)


@pytest.mark.parametrize("name, overrides", [
    ("falcon-7b-smoke", {}),
    ("falcon-40b-smoke", {}),
    ("falcon-40b-smoke", dict(parallel_norms=1, **_BIASES)),
    ("falcon-7b-smoke", dict(parallel_block=False, n_kv_heads=4, **_BIASES)),
])
def test_round_trip_through_transformers(name, overrides, tmp_path):
  assert_round_trip(presets.get(name, **overrides), tmp_path)


def test_alibi_is_refused_by_name():
  with pytest.raises(research.hf.ConversionError, match="alibi=True"):
    research.hf.config_from_hf({"model_type": "falcon", **_SMALL, "alibi": True})


@pytest.mark.parametrize("extra, field", [
    (dict(new_decoder_architecture=True, parallel_attn=False), "parallel_attn=False"),
    (dict(num_ln_in_parallel_attn=2), "num_ln_in_parallel_attn=2"),
    (dict(multi_query=False, num_kv_heads=2), "num_kv_heads=2"),
])
def test_layouts_transformers_cannot_run_are_refused(extra, field):
  with pytest.raises(research.hf.ConversionError, match=field):
    research.hf.config_from_hf({"model_type": "falcon", **_SMALL, **extra})
