"""Named architectures of the field as ModelConfigs, each with a tiny smoke variant.

    presets.get("llama2-7b")          # the published architecture
    presets.get("llama2-7b-smoke")    # same choices, tiny dimensions, for tests and CPU runs

Shapes come from each model's published config.json; `tests/test_presets.py` checks every
preset's parameter count against the published figure.
"""

from __future__ import annotations

from collections.abc import Callable

from research.config.model import ModelConfig
from research.config.validate import close_matches

PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def register(name: str):
  def wrap(fn: Callable[[], ModelConfig]):
    PRESETS[name] = fn
    return fn

  return wrap


def names(include_smoke: bool = True) -> list[str]:
  base = sorted(PRESETS)
  return base + [f"{n}-smoke" for n in base] if include_smoke else base


def get(name: str, **overrides) -> ModelConfig:
  """The preset `name` (add '-smoke' for the tiny variant), with field overrides."""
  smoke_variant = name.endswith("-smoke")
  base = name[: -len("-smoke")] if smoke_variant else name
  if base not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}{close_matches(name, names())}; "
                     f"known: {', '.join(names(False))} (each also as NAME-smoke)")
  cfg = PRESETS[base]()
  if smoke_variant:
    cfg = smoke(cfg)
  return cfg.replace(**overrides) if overrides else cfg


def smoke(cfg: ModelConfig) -> ModelConfig:
  """Tiny dimensions with every architectural choice of `cfg` kept.

  MHA stays MHA, MQA stays MQA, GQA keeps a group size above one; the sliding window
  shrinks so it still cuts in at test lengths. An MoE stays an MoE with its top-k, at most
  8 experts, and enough layers for one group of `moe_every`.
  """
  n_heads = 4
  if cfg.num_kv_heads == cfg.n_heads:
    kv = n_heads
  elif cfg.num_kv_heads == 1:
    kv = 1
  else:
    kv = 2
  experts = min(cfg.moe_experts, 8)
  # A factorised embedding (ALBERT) stays factorised: narrower than the smoke width.
  embed_dim = None if cfg.embed_dim is None else 32
  layers = max(2, cfg.moe_every if experts else 1)
  return cfg.replace(
      embed_dim=embed_dim,
      vocab_size=256, d_model=64, n_layers=layers,
      n_decoder_layers=None if cfg.n_decoder_layers is None else layers,
      n_heads=n_heads, n_kv_heads=kv, head_dim=None,
      d_ff=None, ffn_multiple_of=1, max_seq_len=256,
      sliding_window=None if cfg.sliding_window is None else 16,
      rope_original_max_len=min(cfg.rope_original_max_len, 64),
      moe_experts=experts, moe_top_k=min(cfg.moe_top_k, experts) if experts else cfg.moe_top_k,
      moe_d_ff=None,
  )


# ------------------------------------------------------------------------------- GPT-2

_GPT2 = dict(
    vocab_size=50257, max_seq_len=1024, norm="layernorm", norm_bias=True, norm_eps=1e-5,
    norm_placement="pre", activation="gelu_tanh", position="learned", qkv_bias=True,
    out_bias=True, mlp_bias=True, tie_embeddings=True, scale_residual_init=True,
    embed_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1,
)


@register("gpt2")
def gpt2() -> ModelConfig:
  return ModelConfig(d_model=768, n_layers=12, n_heads=12, **_GPT2)


@register("gpt2-medium")
def gpt2_medium() -> ModelConfig:
  return ModelConfig(d_model=1024, n_layers=24, n_heads=16, **_GPT2)


@register("gpt2-large")
def gpt2_large() -> ModelConfig:
  return ModelConfig(d_model=1280, n_layers=36, n_heads=20, **_GPT2)


@register("gpt2-xl")
def gpt2_xl() -> ModelConfig:
  return ModelConfig(d_model=1600, n_layers=48, n_heads=25, **_GPT2)


# ------------------------------------------------------------------------- LLaMA family

_LLAMA = dict(
    vocab_size=32000, norm="rmsnorm", norm_placement="pre", activation="swiglu",
    position="rope", rope_theta=10000.0, tie_embeddings=False,
)


@register("llama1-7b")
def llama1_7b() -> ModelConfig:
  return ModelConfig(d_model=4096, n_layers=32, n_heads=32, d_ff=11008, max_seq_len=2048,
                     norm_eps=1e-6, **_LLAMA)


@register("llama1-13b")
def llama1_13b() -> ModelConfig:
  return ModelConfig(d_model=5120, n_layers=40, n_heads=40, d_ff=13824, max_seq_len=2048,
                     norm_eps=1e-6, **_LLAMA)


@register("llama1-65b")
def llama1_65b() -> ModelConfig:
  return ModelConfig(d_model=8192, n_layers=80, n_heads=64, d_ff=22016, max_seq_len=2048,
                     norm_eps=1e-5, **_LLAMA)


@register("llama2-7b")
def llama2_7b() -> ModelConfig:
  return ModelConfig(d_model=4096, n_layers=32, n_heads=32, d_ff=11008, max_seq_len=4096,
                     norm_eps=1e-5, **_LLAMA)


@register("llama2-13b")
def llama2_13b() -> ModelConfig:
  return ModelConfig(d_model=5120, n_layers=40, n_heads=40, d_ff=13824, max_seq_len=4096,
                     norm_eps=1e-5, **_LLAMA)


@register("llama2-70b")
def llama2_70b() -> ModelConfig:
  return ModelConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672,
                     max_seq_len=4096, norm_eps=1e-5, **_LLAMA)


_LLAMA3 = {**_LLAMA, "vocab_size": 128256, "rope_theta": 500000.0}


@register("llama3-8b")
def llama3_8b() -> ModelConfig:
  return ModelConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336,
                     max_seq_len=8192, norm_eps=1e-5, **_LLAMA3)


@register("llama3-70b")
def llama3_70b() -> ModelConfig:
  return ModelConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672,
                     max_seq_len=8192, norm_eps=1e-5, **_LLAMA3)


@register("llama3.1-8b")
def llama31_8b() -> ModelConfig:
  return llama3_8b().replace(
      max_seq_len=131072, rope_scaling="llama3", rope_scaling_factor=8.0,
      rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_len=8192)


@register("yi-34b")
def yi_34b() -> ModelConfig:
  return ModelConfig(**{**_LLAMA, "vocab_size": 64000, "rope_theta": 5000000.0},
                     d_model=7168, n_layers=60, n_heads=56, n_kv_heads=8, d_ff=20480,
                     max_seq_len=4096, norm_eps=1e-5)


@register("mistral-7b")
def mistral_7b() -> ModelConfig:
  return ModelConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336,
                     max_seq_len=32768, sliding_window=4096, norm_eps=1e-5, **_LLAMA)


@register("mixtral-8x7b")
def mixtral_8x7b() -> ModelConfig:
  # Jiang et al. (2024): Mistral-7B's attention without the sliding window, and in every layer
  # 8 SwiGLU experts of which each token uses 2, gated by a softmax over the two chosen logits.
  # Dropless routing, like the reference implementation, which drops nothing. The published
  # config's router_aux_loss_coef=0.02 weighs one loss pooled over all layers whose f sums to
  # k=2; ours is per layer with f summing to 1, summed over the 32 layers: 0.02 * 2 / 32.
  return ModelConfig(
      d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336, max_seq_len=32768,
      norm_eps=1e-5, **{**_LLAMA, "rope_theta": 1000000.0},
      moe_experts=8, moe_top_k=2, moe_softmax_after_topk=True, moe_dropless=True,
      moe_aux_weight=0.02 * 2 / 32, moe_z_weight=0.0)


_QWEN2 = {**_LLAMA, "rope_theta": 1000000.0, "qkv_bias": True, "norm_eps": 1e-6}


@register("qwen2-0.5b")
def qwen2_05b() -> ModelConfig:
  return ModelConfig(**{**_QWEN2, "vocab_size": 151936, "tie_embeddings": True},
                     d_model=896, n_layers=24, n_heads=14, n_kv_heads=2, d_ff=4864,
                     max_seq_len=32768)


@register("qwen2-7b")
def qwen2_7b() -> ModelConfig:
  return ModelConfig(**{**_QWEN2, "vocab_size": 152064}, d_model=3584, n_layers=28,
                     n_heads=28, n_kv_heads=4, d_ff=18944, max_seq_len=32768)


# ----------------------------------------------------------------------------- Falcon

_FALCON = dict(
    vocab_size=65024, max_seq_len=2048, norm="layernorm", norm_bias=True, norm_eps=1e-5,
    norm_placement="pre", activation="gelu", position="rope", parallel_block=True,
    tie_embeddings=True,
)


@register("falcon-7b")
def falcon_7b() -> ModelConfig:
  # Multi-query attention, one layer norm shared by the parallel attention and MLP.
  return ModelConfig(d_model=4544, n_layers=32, n_heads=71, n_kv_heads=1, parallel_norms=1,
                     **_FALCON)


@register("falcon-40b")
def falcon_40b() -> ModelConfig:
  # The "new decoder architecture": grouped KV heads and separate norms for attention and MLP.
  return ModelConfig(d_model=8192, n_layers=60, n_heads=128, n_kv_heads=8, parallel_norms=2,
                     **_FALCON)


# ------------------------------------------------------------------------------ BLOOM

_BLOOM = dict(
    vocab_size=250880, max_seq_len=2048, norm="layernorm", norm_bias=True, norm_eps=1e-5,
    norm_placement="pre", embed_norm=True, activation="gelu_tanh", position="alibi",
    qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True,
)


@register("bloom-560m")
def bloom_560m() -> ModelConfig:
  return ModelConfig(d_model=1024, n_layers=24, n_heads=16, **_BLOOM)


@register("bloom-7b1")
def bloom_7b1() -> ModelConfig:
  return ModelConfig(d_model=4096, n_layers=30, n_heads=32, **_BLOOM)


# ------------------------------------------------------------------- GPT-NeoX / Pythia

_NEOX = dict(
    vocab_size=50304, max_seq_len=2048, norm="layernorm", norm_bias=True, norm_eps=1e-5,
    norm_placement="pre", activation="gelu", position="rope", rope_fraction=0.25,
    parallel_block=True, parallel_norms=2, qkv_bias=True, out_bias=True, mlp_bias=True,
    tie_embeddings=False,
)


@register("pythia-160m")
def pythia_160m() -> ModelConfig:
  return ModelConfig(d_model=768, n_layers=12, n_heads=12, **_NEOX)


@register("pythia-1b")
def pythia_1b() -> ModelConfig:
  return ModelConfig(d_model=2048, n_layers=16, n_heads=8, **_NEOX)


@register("gpt-neox-20b")
def gpt_neox_20b() -> ModelConfig:
  return ModelConfig(**{**_NEOX, "vocab_size": 50432}, d_model=6144, n_layers=44, n_heads=64)


# ------------------------------------------------------------------- Encoder-only family
# Counted as transformers' base models (BertModel, RobertaModel, AlbertModel: embeddings,
# encoder and pooler); the pretraining and fine-tuning heads are chosen with the objective
# (research.config.registry sets `encoder_heads` for PRETRAINING_OBJECTIVES[name]).

_BERT = dict(
    family="encoder", vocab_size=30522, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
    max_seq_len=512, norm="layernorm", norm_bias=True, norm_eps=1e-12, norm_placement="post",
    embed_norm=True, activation="gelu", position="learned", qkv_bias=True, out_bias=True,
    mlp_bias=True, tie_embeddings=True, type_vocab_size=2, pooler=True,
    embed_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1,
)

# The objective `python -m research.train --config NAME` pretrains each encoder preset with.
PRETRAINING_OBJECTIVES = {"bert-base": "mlm_nsp", "roberta-base": "mlm", "albert-base": "mlm_sop"}


@register("bert-base")
def bert_base() -> ModelConfig:
  # Devlin et al. (2019), BERT-base: bert-base-uncased's config.json.
  return ModelConfig(**_BERT)


@register("roberta-base")
def roberta_base() -> ModelConfig:
  # Liu et al. (2019): BERT-base with a 50K byte-level BPE vocabulary, one token type, and
  # position ids offset past the padding index 1 (514 position rows for 512 tokens).
  return ModelConfig(**{**_BERT, "vocab_size": 50265, "max_seq_len": 514, "norm_eps": 1e-5,
                        "type_vocab_size": 1}, position_padding_idx=1)


@register("albert-base")
def albert_base() -> ModelConfig:
  # Lan et al. (2020), ALBERT-base (albert-base-v2's config.json): a 128-wide embedding projected
  # to 768, one layer shared by all 12, tanh-GELU, no dropout.
  return ModelConfig(**{**_BERT, "vocab_size": 30000, "activation": "gelu_tanh",
                        "embed_dropout": 0.0, "attn_dropout": 0.0, "resid_dropout": 0.0},
                     embed_dim=128, albert_sharing="all")


# ------------------------------------------------------ T5 and Switch (encoder-decoder)

# Raffel et al. (2020): pre-RMSNorm without bias, relative position buckets shared by the layers
# of each stack, no 1/sqrt(d) score scaling, dropout 0.1 everywhere. Shapes from the published
# config.json files (t5-small, t5-base, google/t5-v1_1-small, google/switch-base-8).
_T5 = dict(
    family="encoder_decoder", vocab_size=32128, max_seq_len=512, norm="rmsnorm", norm_eps=1e-6,
    norm_bias=False, norm_placement="pre", position="t5", rel_buckets=32, rel_max_distance=128,
    attn_scale=1.0, qkv_bias=False, out_bias=False, mlp_bias=False,
    embed_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1, ffn_dropout=0.1,
    # Mesh TensorFlow's T5 initialisation: the shared embedding from N(0, 1), kernels by fan-in
    # with attention's 1/sqrt(d) folded into the queries.
    embed_init_std=1.0, init_scheme="fan_in",
)
# v1.0: ReLU, the head tied to the shared embedding (and the decoder output scaled by d^-0.5).
_T5_V1_0 = dict(_T5, activation="relu", tie_embeddings=True)
# v1.1: gated-GELU (transformers runs it with the tanh approximation), untied head.
_T5_V1_1 = dict(_T5, activation="geglu_tanh", tie_embeddings=False)


@register("t5-small")
def t5_small() -> ModelConfig:
  return ModelConfig(d_model=512, n_layers=6, n_heads=8, d_ff=2048, **_T5_V1_0)


@register("t5-base")
def t5_base() -> ModelConfig:
  return ModelConfig(d_model=768, n_layers=12, n_heads=12, d_ff=3072, **_T5_V1_0)


@register("t5-v1_1-small")
def t5_v1_1_small() -> ModelConfig:
  # 6 heads of 64 dims on a 512-wide model: head_dim is not d_model / n_heads.
  return ModelConfig(d_model=512, n_layers=8, n_heads=6, head_dim=64, d_ff=1024, **_T5_V1_1)


@register("switch-base-8")
def switch_base_8() -> ModelConfig:
  # Fedus et al. (2021): T5-Base with every other FFN (layers 1, 3, ... of both stacks) a
  # top-1 mixture of 8 ReLU experts, gated by the full softmax's probability, each expert taking
  # at most 64 tokens of a sequence (capacity factor 1.0 at 512 tokens). The published loss
  # weights 0.001 weigh one loss per stack pooled over its 6 MoE layers; ours are per layer,
  # summed. The router's training-time input jitter (0.01) is not implemented.
  return t5_base().replace(
      moe_experts=8, moe_top_k=1, moe_every=2, moe_softmax_after_topk=False,
      moe_expert_capacity=64, moe_aux_weight=0.001 / 6, moe_z_weight=0.001 / 6)


# ------------------------------------------------------------------- GLM (prefix LM)

# Du et al. (2022): bidirectional attention over the blanked text (Part A), causal over the
# spans being filled in (Part B), 2D positions. Shapes from the published configs; trained
# with the blank_infilling objective.


@register("glm-small")
def glm_small() -> ModelConfig:
  # GLM-Base (the paper's 110M model): BERT-base shape and its uncased WordPiece vocabulary
  # (padded to 30592), Megatron's pre-LN blocks with biases, learned 2D positions, tied head.
  return ModelConfig(
      family="prefix_lm", vocab_size=30592, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
      max_seq_len=512, norm="layernorm", norm_bias=True, norm_eps=1e-5, norm_placement="pre",
      activation="gelu_tanh", position="learned", block_positions=True, qkv_bias=True,
      out_bias=True, mlp_bias=True, tie_embeddings=True,
      embed_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1)


@register("chatglm-6b")
def chatglm_6b() -> ModelConfig:
  # ChatGLM-6B: post-LN with DeepNorm, alpha = (2N)^(1/2) and init gain (2N)^(-1/2) (GLM-130B,
  # Zeng et al. 2022, section 2.1; not DeepNet's decoder formula), GeLU, 2D RoPE (half of each
  # head rotated by the position, half by the block position). Its blocks normalise each
  # sub-layer's input and add alpha times that normalised input back; the same function is our
  # DeepNorm block (norm(alpha x + f(x))) after a norm on the embeddings, with the final norm
  # being the last block's.
  n = 28
  return ModelConfig(
      family="prefix_lm", vocab_size=130528, d_model=4096, n_layers=n, n_heads=32, d_ff=16384,
      max_seq_len=2048, norm="layernorm", norm_bias=True, norm_eps=1e-5,
      norm_placement="deepnorm", deepnorm_alpha=(2 * n) ** 0.5, deepnorm_beta=(2 * n) ** -0.5,
      embed_norm=True, activation="gelu_tanh", position="rope", block_positions=True,
      qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True)


@register("chatglm2-6b")
def chatglm2_6b() -> ModelConfig:
  # ChatGLM2-6B: pre-RMSNorm, SwiGLU, multi-query attention with 2 key/value groups, RoPE on
  # half of each head (1D positions), q/k/v biases only, untied output layer. ChatGLM2 pairs
  # rotary dims interleaved; ours pairs halves (a fixed permutation of the q/k weights).
  return ModelConfig(
      family="prefix_lm", vocab_size=65024, d_model=4096, n_layers=28, n_heads=32, n_kv_heads=2,
      head_dim=128, d_ff=13696, max_seq_len=32768, norm="rmsnorm", norm_eps=1e-5,
      norm_placement="pre", activation="swiglu", position="rope", rope_fraction=0.5,
      qkv_bias=True, out_bias=False, mlp_bias=False, tie_embeddings=False)
