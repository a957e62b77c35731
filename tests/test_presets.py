import jax
import numpy as np
import pytest

from research import presets
from research.models import registry
from research.models.registry import num_params

# Published parameter counts (model cards / papers), exact where the card gives the figure.
PUBLISHED = {
    "gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "llama1-7b": 6_738_415_616, "llama1-13b": 13_015_864_320, "llama1-65b": 65_285_660_672,
    "llama2-7b": 6_738_415_616, "llama2-13b": 13_015_864_320, "llama2-70b": 68_976_648_192,
    "llama3-8b": 8_030_261_248, "llama3.1-8b": 8_030_261_248, "llama3-70b": 70_553_706_496,
    "yi-34b": 34_388_917_248, "mistral-7b": 7_241_732_096,
    "qwen2-0.5b": 494_032_768, "qwen2-7b": 7_615_616_512,
    "falcon-7b": 6_921_720_704, "falcon-40b": 41_303_293_952,
    "bloom-560m": 559_214_592, "bloom-7b1": 7_069_016_064,
    "pythia-160m": 162_322_944, "pythia-1b": 1_011_781_632, "gpt-neox-20b": 20_554_567_680,
    "mixtral-8x7b": 46_702_792_704,
    # Encoder-only: transformers' base models (embeddings, encoder, pooler), as the model cards
    # count them: bert-base-uncased, roberta-base, albert-base-v2.
    "bert-base": 109_482_240, "roberta-base": 124_645_632, "albert-base": 11_683_584,
    # Encoder-decoder (tests/test_hf_t5.py rebuilds these with transformers).
    "t5-small": 60_506_624, "t5-base": 222_903_552, "t5-v1_1-small": 76_961_152,
    "switch-base-8": 619_339_008,
    # Prefix LMs. The cards round: ChatGLM2-6B 6.24B, ChatGLM-6B 6.2B, GLM-Base 110M (GLM paper,
    # Table 1); the exact figures are our architecture's (tests/test_prefix_lm.py checks the
    # rounding).
    "chatglm2-6b": 6_243_584_000, "chatglm-6b": 6_173_286_400, "glm-small": 109_337_088,
}


def test_every_preset_has_a_published_count():
  assert set(PUBLISHED) == set(presets.names(include_smoke=False))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_num_params_matches_published(name):
  assert num_params(presets.get(name)) == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_smoke_variant_keeps_the_architecture_and_runs(name):
  full, small = presets.get(name), presets.get(name + "-smoke")
  for field in ("norm", "norm_placement", "activation", "position", "parallel_block",
                "parallel_norms", "tie_embeddings", "qkv_bias", "embed_norm", "rope_fraction",
                "family", "type_vocab_size", "position_padding_idx", "albert_sharing", "pooler",
                "attn_scale", "block_positions"):
    assert getattr(small, field) == getattr(full, field), field
  assert (small.embed_dim is None) == (full.embed_dim is None)
  for field in ("moe_top_k", "moe_every", "moe_dropless", "moe_softmax_after_topk", "moe_priority"):
    assert getattr(small, field) == getattr(full, field), field
  assert (small.moe_experts > 0) == (full.moe_experts > 0)
  kv_kind = lambda c: "mha" if c.num_kv_heads == c.n_heads else "mqa" if c.num_kv_heads == 1 else "gqa"
  assert kv_kind(small) == kv_kind(full)
  params = registry.init_params(small, jax.random.key(0))
  model = registry.build(small)
  inputs = registry.dummy_inputs(small, batch=1, length=8)
  out = jax.jit(lambda p, x: model.apply({"params": p}, **x))(params, inputs)
  if small.family == "encoder":  # a base model: hidden states (and the pooler), no heads
    assert out["hidden"].shape == (1, 8, small.d_model) and out["pooled"].shape == (1, small.d_model)
    out = out["hidden"]
  else:
    assert out.shape == (1, 8, small.vocab_size)
  assert np.isfinite(out).all()


def test_unknown_preset_suggests_close_names():
  with pytest.raises(ValueError, match="did you mean llama2-7b"):
    presets.get("llama2-7")


def test_overrides_apply():
  assert presets.get("gpt2", n_layers=2).n_layers == 2
