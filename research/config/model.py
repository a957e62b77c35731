"""`ModelConfig`: the architecture of every family, one frozen dataclass.

Each architectural choice a sweep may vary is a field here (norm, placement, activation,
position, heads, block layout); derived numbers are methods. Construction validates every
field, so a bad sweep point fails before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from research.config import roles, validate

# decoder: CausalLM. encoder: BERT-style (research/models/encoder.py). encoder_decoder: T5-style,
# with cross-attention (research/models/encoder_decoder.py). prefix_lm: GLM-style, bidirectional
# over a prefix, causal after (research/models/decoder.py).
FAMILIES = ("decoder", "encoder", "encoder_decoder", "prefix_lm")
NORMS = ("layernorm", "rmsnorm")
PLACEMENTS = ("pre", "post", "sandwich", "deepnorm")
# Kept in step with the registries in research.layers (tests/test_config.py checks they agree).
ACTIVATIONS = (
    "relu", "gelu", "gelu_tanh", "swish", "silu", "swiglu", "geglu", "geglu_tanh", "reglu",
)
GATED_ACTIVATIONS = ("swiglu", "geglu", "geglu_tanh", "reglu")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "t5", "none")
ROPE_SCALINGS = ("none", "linear", "llama3")
ATTENTION_IMPLS = ("xla", "chunked", "cudnn", "pallas_gpu", "pallas_tpu", "auto")
DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("auto", "none", "full", "dots", "dots_no_batch", "outputs")
INIT_SCHEMES = ("normal", "fan_in")
# Order in which assignments claim expert slots when capacity is short (research.layers.routing).
MOE_PRIORITIES = ("token", "choice")

# ---- Encoder-only family (research/models/encoder.py) ----
# ALBERT's cross-layer parameter sharing (Lan et al. 2020, section 4.5 and Table 4).
ALBERT_SHARING = ("none", "all", "ffn", "attention")
# Heads an encoder may carry (research/models/heads.py), each an entry of its output dict.
ENCODER_HEADS = ("mlm", "nsp", "sop", "classification", "token_classification", "extractive_qa")
# Heads that read one vector per sequence: the pooler's output, else the [CLS] hidden state.
SEQUENCE_HEADS = ("nsp", "sop", "classification")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a transformer language model.

  Einsum letters used across the model code: B batch, T query length, S key length,
  N query heads, K key/value heads, G query heads per kv head, H head dim, D model dim,
  F feed-forward hidden dim, V vocabulary, L layers, E experts, C expert capacity.
  """

  family: str = "decoder"
  vocab_size: int = 32000
  d_model: int = 512
  n_layers: int = 8
  n_heads: int = 8
  # None means n_heads (multi-head). 1 is multi-query, in between grouped-query attention.
  n_kv_heads: int | None = None
  # None means d_model // n_heads.
  head_dim: int | None = None
  # None means 4 * d_model, times 2/3 for GLU activations when glu_param_matched.
  d_ff: int | None = None
  glu_param_matched: bool = True
  ffn_multiple_of: int = 1
  max_seq_len: int = 2048

  # Normalisation.
  norm: str = "rmsnorm"
  norm_eps: float = 1e-5
  norm_bias: bool = False
  norm_placement: str = "pre"
  # None: a final norm exactly when the residual stream is not normalised (pre, sandwich).
  final_norm: bool | None = None
  # BLOOM normalises the token embeddings before the first block.
  embed_norm: bool = False
  # Token embeddings times sqrt(d_model) (Vaswani et al. 2017, section 3.4), so that added
  # sinusoidal positions of amplitude 1 do not drown embeddings initialised at init_std.
  embed_scale: bool = False
  # DeepNet's residual scale alpha and init gain beta; None: the paper's formula.
  deepnorm_alpha: float | None = None
  deepnorm_beta: float | None = None

  activation: str = "swiglu"

  # Positions.
  position: str = "rope"
  rope_theta: float = 10000.0
  # Fraction of each head's dims that rotate (GPT-NeoX/Pythia: 0.25).
  rope_fraction: float = 1.0
  rope_scaling: str = "none"
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  rel_buckets: int = 32
  rel_max_distance: int = 128

  # Attention.
  qkv_bias: bool = False
  out_bias: bool = False
  # None: 1/sqrt(head_dim). T5 folds the scale into its init and uses 1.0.
  attn_scale: float | None = None
  sliding_window: int | None = None
  # research/layers/attention_backends.py: xla, chunked (flash, O(L) memory), cudnn,
  # pallas_gpu, pallas_tpu, auto. Block sizes are the query/key tiles of chunked and Pallas.
  attention_impl: str = roles.layout("xla")
  attention_block_q: int = roles.layout(512)
  attention_block_k: int = roles.layout(512)

  # Block layout.
  mlp_bias: bool = False
  parallel_block: bool = False
  # Parallel blocks: one norm shared by attention and FFN (GPT-J, Falcon-7B) or two (NeoX,
  # Falcon-40B).
  parallel_norms: int = 1

  # Mixture of experts (research/layers/moe.py). 0 experts: every FFN is dense.
  moe_experts: int = 0
  # Experts each token is sent to: 1 is Switch (Fedus et al. 2021), 2 GShard and Mixtral.
  moe_top_k: int = 2
  # Every k-th layer's FFN is an MoE (the last of each group of k; 1: all of them).
  moe_every: int = 1
  # Hidden width of each expert; None: ffn_hidden.
  moe_d_ff: int | None = None
  # Expert slots per group of tokens: ceil(factor * top_k * tokens / experts); assignments
  # past an expert's capacity are dropped (their token skips that expert). Unused when dropless.
  moe_capacity_factor: float = 1.25
  # A fixed number of slots per expert and sequence instead of the factor (Switch Transformers'
  # published `expert_capacity`, e.g. 64 for sequences of 512 tokens over 8 experts).
  moe_expert_capacity: int | None = None
  moe_dropless: bool = False
  moe_priority: str = "token"
  # False: gates are the full softmax's probabilities of the chosen experts (Switch).
  # True: softmax over the chosen experts' logits only, i.e. renormalised (Mixtral, GShard top-2).
  moe_softmax_after_topk: bool = False
  # Switch load-balancing loss weight (alpha, Fedus et al. 2021) and router z-loss weight
  # (c_z, Zoph et al. 2022), per MoE layer.
  moe_aux_weight: float = 0.01
  moe_z_weight: float = 0.001

  tie_embeddings: bool = True

  # ---- Encoder-only family (family="encoder", research/models/encoder.py): BERT, RoBERTa,
  # ALBERT. Other families must leave these at their defaults.
  # Set: the token, position and type embeddings are E = embed_dim wide and a dense layer maps
  # them to d_model: ALBERT's factorised embedding, V x E then E x H (Lan et al. 2020, section
  # 3.1). None: embeddings are d_model wide, no projection.
  embed_dim: int | None = None
  # Token type (segment) embeddings: 2 for BERT's and ALBERT's sentence pairs, 1 for RoBERTa.
  type_vocab_size: int = 0
  # RoBERTa: position ids count the non-padding tokens from position_padding_idx + 1 and padding
  # gets position_padding_idx, as transformers' create_position_ids_from_input_ids computes them
  # from input_ids. None: positions 0, 1, ... (BERT).
  position_padding_idx: int | None = None
  # Which sub-layers all layers share (ALBERT): "none", "all", "ffn" or "attention".
  albert_sharing: str = "none"
  # BERT's pooler, tanh(h_[CLS] W + b), which the sentence-level heads read.
  pooler: bool = False
  # Output heads (ENCODER_HEADS); the model returns a dict with an entry per head.
  encoder_heads: tuple[str, ...] = ()
  # Classes of the classification and token_classification heads.
  num_labels: int = 2
  # Token classification scored by a linear-chain CRF (research/layers/crf.py) on its emissions.
  crf: bool = False
  # Dropout before the sop, classification and token_classification layers; None: resid_dropout
  # (transformers' classifier_dropout / ALBERT's classifier_dropout_prob).
  head_dropout: float | None = None

  embed_dropout: float = roles.runtime(0.0)
  attn_dropout: float = roles.runtime(0.0)
  resid_dropout: float = roles.runtime(0.0)

  init_std: float = roles.init(0.02)
  # GPT-2 / Megatron: residual-output projections initialised with std / sqrt(2 n_layers).
  scale_residual_init: bool = roles.init(False)

  # ------------------------------------------- encoder-decoder and prefix-LM families
  # Decoder layers of an encoder_decoder model (n_layers counts the encoder's); None: n_layers.
  n_decoder_layers: int | None = None
  # Dropout on the FFN hidden activations, between the input and output projections (T5's
  # DenseReluDense drops there as well as on each sub-layer's output).
  ffn_dropout: float = 0.0
  # Scale the decoder's output by d_model^-0.5 before the head (Mesh TensorFlow's T5 v1.0;
  # transformers' `scale_decoder_outputs`, which T5 sets apart from tying). None: when
  # tie_embeddings (T5 v1.0 tied and scaled, v1.1 untied and not).
  scale_decoder_outputs: bool | None = None
  # Std of the token embedding's initialiser; None: init_std. T5 draws it from N(0, 1) (its tied
  # head rescales by d_model^-0.5, so the initial logits are of order one).
  embed_init_std: float | None = roles.init(None)
  # Kernels: 'normal' N(0, init_std^2); 'fan_in' N(0, 1/fan_in), queries also / head_dim
  # (Mesh TensorFlow's T5, for attn_scale=1.0; research/layers/init.py). DeepNorm overrides both.
  init_scheme: str = roles.init("normal")
  # GLM's 2D positions (Du et al. 2022, section 2.2.2): a second id per token, its position
  # inside the blank it fills (0 outside blanks). 'learned' adds a second table; 'rope' rotates
  # half the rotary dims by each id (ChatGLM-6B). prefix_lm only.
  block_positions: bool = False

  dtype: str = roles.runtime("float32")
  param_dtype: str = roles.runtime("float32")
  scan_layers: bool = roles.runtime(True)
  # What the backward pass recomputes (research.layers.stack.REMAT_POLICIES); 'auto' is
  # `remat_policy`'s choice for the stack form.
  remat: str = roles.layout("auto")
  # GPipe over the `stage` mesh axis; normally set from MeshConfig by ExperimentConfig.
  pipeline_stages: int = roles.layout(1)
  pipeline_microbatches: int = roles.layout(1)

  def __post_init__(self):
    own = type(self).__name__
    validate.choice(own, "family", self.family, FAMILIES)
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len",
                 "ffn_multiple_of", "rel_buckets", "rel_max_distance", "attention_block_q",
                 "attention_block_k"):
      validate.positive(own, name, getattr(self, name))
    validate.choice(own, "norm", self.norm, NORMS)
    validate.positive(own, "norm_eps", self.norm_eps)
    validate.choice(own, "norm_placement", self.norm_placement, PLACEMENTS)
    validate.choice(own, "activation", self.activation, ACTIVATIONS)
    validate.choice(own, "position", self.position, POSITIONS)
    validate.choice(own, "rope_scaling", self.rope_scaling, ROPE_SCALINGS)
    validate.choice(own, "attention_impl", self.attention_impl, ATTENTION_IMPLS)
    validate.choice(own, "dtype", self.dtype, DTYPES)
    validate.choice(own, "param_dtype", self.param_dtype, DTYPES)
    validate.choice(own, "remat", self.remat, REMAT_POLICIES)
    validate.choice(own, "init_scheme", self.init_scheme, INIT_SCHEMES)
    validate.choice(own, "parallel_norms", self.parallel_norms, (1, 2))
    validate.positive(own, "pipeline_stages", self.pipeline_stages)
    validate.positive(own, "pipeline_microbatches", self.pipeline_microbatches)
    if self.pipeline_stages > 1:
      validate.divisible(own, "n_layers", self.n_layers, "pipeline_stages", self.pipeline_stages)
      if not self.scan_layers:
        raise ValueError(f"{own}.pipeline_stages={self.pipeline_stages} needs scan_layers=True")
      if self.moe_experts:
        raise ValueError(
            f"{own}.pipeline_stages={self.pipeline_stages} with moe_experts={self.moe_experts} is not "
            "supported: the MoE auxiliary losses are not collected through the pipeline schedule")
    for name in ("embed_dropout", "attn_dropout", "resid_dropout", "ffn_dropout"):
      validate.in_range(own, name, getattr(self, name), 0.0, 1.0 - 1e-6)
    validate.positive(own, "init_std", self.init_std)
    validate.positive(own, "rope_theta", self.rope_theta)
    validate.positive(own, "rope_scaling_factor", self.rope_scaling_factor)
    validate.in_range(own, "rope_fraction", self.rope_fraction, 0.0, 1.0)
    for name in ("n_kv_heads", "head_dim", "d_ff", "sliding_window", "embed_init_std"):
      value = getattr(self, name)
      if value is not None:
        validate.positive(own, name, value)
    if self.head_dim is None:
      validate.divisible(own, "d_model", self.d_model, "n_heads", self.n_heads)
    validate.divisible(own, "n_heads", self.n_heads, "n_kv_heads", self.num_kv_heads)
    if self.position == "rope":
      rot = self.rope_dims
      if rot == 0 or rot % 2:
        raise ValueError(
            f"{own}.rope_fraction={self.rope_fraction} gives {rot} rotary dims of "
            f"head_dim={self.dim_per_head}; rotary dims must be even and > 0"
        )
    self._validate_moe(own)
    self._validate_encoder(own)
    self._validate_family(own)
    if self.parallel_block and self.norm_placement not in ("pre", "post"):
      raise ValueError(
          f"{own}.parallel_block=True needs norm_placement 'pre' or 'post', got "
          f"{self.norm_placement!r}"
      )
    for name in ("deepnorm_alpha", "deepnorm_beta"):
      if getattr(self, name) is not None and self.norm_placement != "deepnorm":
        raise ValueError(
            f"{own}.{name} is set but norm_placement={self.norm_placement!r}; "
            "it only applies to norm_placement='deepnorm'"
        )

  def _validate_moe(self, own: str) -> None:
    validate.positive(own, "moe_experts", self.moe_experts, allow_zero=True)
    if not self.moe_experts:
      return
    validate.in_range(own, "moe_top_k", self.moe_top_k, 1, self.moe_experts)
    validate.positive(own, "moe_every", self.moe_every)
    # The scanned stack repeats groups of moe_every layers, so the groups must tile the stack.
    validate.divisible(own, "n_layers", self.n_layers, "moe_every", self.moe_every)
    if self.moe_d_ff is not None:
      validate.positive(own, "moe_d_ff", self.moe_d_ff)
    validate.positive(own, "moe_capacity_factor", self.moe_capacity_factor)
    if self.moe_expert_capacity is not None:
      validate.positive(own, "moe_expert_capacity", self.moe_expert_capacity)
    validate.choice(own, "moe_priority", self.moe_priority, MOE_PRIORITIES)
    validate.positive(own, "moe_aux_weight", self.moe_aux_weight, allow_zero=True)
    validate.positive(own, "moe_z_weight", self.moe_z_weight, allow_zero=True)

  def _validate_encoder(self, own: str) -> None:
    if self.family != "encoder":
      for f in dataclasses.fields(self):
        if f.name in _ENCODER_FIELDS and getattr(self, f.name) != f.default:
          raise ValueError(f"{own}.{f.name}={getattr(self, f.name)!r} only applies to "
                           f"family='encoder' (family={self.family!r})")
      return
    if self.embed_dim is not None:
      validate.positive(own, "embed_dim", self.embed_dim)
    validate.positive(own, "type_vocab_size", self.type_vocab_size, allow_zero=True)
    validate.positive(own, "num_labels", self.num_labels)
    if self.head_dropout is not None:
      validate.in_range(own, "head_dropout", self.head_dropout, 0.0, 1.0 - 1e-6)
    validate.choice(own, "albert_sharing", self.albert_sharing, ALBERT_SHARING)
    for head in self.encoder_heads:
      validate.choice(own, "encoder_heads", head, ENCODER_HEADS)
    if len(set(self.encoder_heads)) != len(self.encoder_heads):
      raise ValueError(f"{own}.encoder_heads={self.encoder_heads!r} has duplicates")
    if self.crf and "token_classification" not in self.encoder_heads:
      raise ValueError(f"{own}.crf=True needs 'token_classification' in {own}.encoder_heads "
                       f"(got {self.encoder_heads!r})")
    if self.position_padding_idx is not None:
      validate.positive(own, "position_padding_idx", self.position_padding_idx, allow_zero=True)
      if self.position != "learned":
        raise ValueError(f"{own}.position_padding_idx={self.position_padding_idx} offsets learned "
                         f"positions; position={self.position!r}")
      if self.max_input_len < 1:
        raise ValueError(f"{own}.max_seq_len={self.max_seq_len} leaves no positions after "
                         f"position_padding_idx={self.position_padding_idx}")
    if self.sliding_window is not None:
      raise ValueError(f"{own}.sliding_window={self.sliding_window}: the window of the attention "
                       "masks is causal (keys before the query); family='encoder' attends both ways")
    if self.albert_sharing != "none":
      if self.moe_experts:
        raise ValueError(f"{own}.albert_sharing={self.albert_sharing!r} cannot be combined with "
                         f"moe_experts={self.moe_experts}")
      if self.pipeline_stages > 1:
        raise ValueError(f"{own}.albert_sharing={self.albert_sharing!r} shares layers, which "
                         f"pipeline_stages={self.pipeline_stages} would place on different stages")
      if self.albert_sharing in ("ffn", "attention") and self.scan_layers:
        raise ValueError(
            f"{own}.albert_sharing={self.albert_sharing!r} shares one sub-layer across otherwise "
            "distinct layers, which a scanned stack cannot hold; set scan_layers=False")

  def _validate_family(self, own: str) -> None:
    """Fields and combinations the encoder_decoder and prefix_lm families add or exclude."""
    if self.n_decoder_layers is not None:
      if self.family != "encoder_decoder":
        raise ValueError(f"{own}.n_decoder_layers={self.n_decoder_layers} only applies to "
                         f"family='encoder_decoder', not {self.family!r}")
      validate.positive(own, "n_decoder_layers", self.n_decoder_layers)
    if self.scale_decoder_outputs is not None and self.family != "encoder_decoder":
      raise ValueError(f"{own}.scale_decoder_outputs={self.scale_decoder_outputs} only applies to "
                       f"family='encoder_decoder', not {self.family!r}")
    if self.block_positions:
      if self.family != "prefix_lm":
        raise ValueError(f"{own}.block_positions=True only applies to family='prefix_lm', not "
                         f"{self.family!r}")
      if self.position not in ("learned", "rope"):
        raise ValueError(f"{own}.block_positions=True needs position 'learned' or 'rope', got "
                         f"{self.position!r}")
      if self.position == "rope" and self.rope_dims % 4:
        raise ValueError(
            f"{own}.block_positions=True with position='rope' splits the {self.rope_dims} rotary "
            "dims into two halves of even size; rope_dims must be divisible by 4")
    if self.family in ("decoder", "encoder"):  # the encoder's own checks: _validate_encoder
      return
    if self.position == "alibi":
      raise ValueError(f"{own}.position='alibi' is not supported for family={self.family!r}: "
                       "ALiBi's bias is defined for causal attention only")
    if self.sliding_window is not None:
      raise ValueError(f"{own}.sliding_window={self.sliding_window} is not supported for "
                       f"family={self.family!r} (the window is one-sided, for causal attention)")
    if self.family == "encoder_decoder":
      if self.parallel_block:
        raise ValueError(f"{own}.parallel_block=True is not supported for family='encoder_decoder'")
      if self.pipeline_stages > 1:
        raise ValueError(f"{own}.pipeline_stages={self.pipeline_stages} is not supported for "
                         "family='encoder_decoder'")
      if self.moe_experts:
        validate.divisible(own, "n_decoder_layers", self.decoder_layers, "moe_every",
                           self.moe_every)

  @property
  def remat_policy(self) -> str:
    """The remat policy the stack applies: `remat`, with 'auto' resolved by the stack form.

    'auto' is 'dots_no_batch' for a scanned stack (save each layer's projection outputs,
    recompute the elementwise work) and 'none' for the loop form. A scan stacks every saved
    activation into an [L, ...] buffer that XLA zero-fills and copies before the loop writes
    it; saving fewer of them measured faster, not slower, even with the recompute (CPU train
    step, nanoGPT size 39 -> 26 ms, d_model 512 3.1 -> 2.9 s), and it is what MaxText and
    levanter do to scanned stacks on accelerators for memory. The loop form has no such
    buffers, and recomputing only costs there.
    """
    if self.remat != "auto":
      return self.remat
    return "dots_no_batch" if self.scan_layers else "none"

  # ---------------------------------------------------------------- derived sizes

  @property
  def decoder_layers(self) -> int:
    """Layers of an encoder_decoder model's decoder stack."""
    return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers

  @property
  def decoder_output_scaled(self) -> bool:
    """Whether an encoder_decoder model scales its decoder output by d_model^-0.5."""
    if self.scale_decoder_outputs is None:
      return self.tie_embeddings
    return self.scale_decoder_outputs

  @property
  def num_kv_heads(self) -> int:
    return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

  @property
  def dim_per_head(self) -> int:
    return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

  @property
  def rope_dims(self) -> int:
    """Number of rotated dims per head (an even number)."""
    return int(self.dim_per_head * self.rope_fraction) // 2 * 2

  @property
  def gated(self) -> bool:
    return self.activation in GATED_ACTIVATIONS

  @property
  def ffn_hidden(self) -> int:
    if self.d_ff is not None:
      return self.d_ff
    hidden = 4 * self.d_model
    if self.gated and self.glu_param_matched:
      # Shazeer (2020): GLU layers have three matrices; 2/3 of the width keeps params equal.
      hidden = int(2 * hidden / 3)
    m = self.ffn_multiple_of
    return m * math.ceil(hidden / m)

  @property
  def expert_hidden(self) -> int:
    return self.ffn_hidden if self.moe_d_ff is None else self.moe_d_ff

  @property
  def n_moe_layers(self) -> int:
    return self.n_layers // self.moe_every if self.moe_experts else 0

  @property
  def embedding_width(self) -> int:
    """E: the width of the embedding tables (d_model unless factorised)."""
    return self.d_model if self.embed_dim is None else self.embed_dim

  @property
  def max_input_len(self) -> int:
    """The longest input the position table serves (RoBERTa's offset uses some of its rows)."""
    if self.position_padding_idx is None:
      return self.max_seq_len
    return self.max_seq_len - self.position_padding_idx - 1

  @property
  def has_final_norm(self) -> bool:
    if self.final_norm is not None:
      return self.final_norm
    return self.norm_placement in ("pre", "sandwich")

  def deepnorm(self) -> tuple[float, float]:
    """DeepNet (Wang et al. 2022, Table 1) residual scale alpha and init gain beta.

    Decoder-only and encoder-only stacks of N layers: alpha = (2N)^(1/4), beta = (8N)^(-1/4).
    Encoder-decoder families use `deepnorm_encdec` instead.
    """
    n = self.n_layers
    alpha = (2 * n) ** 0.25 if self.deepnorm_alpha is None else self.deepnorm_alpha
    beta = (8 * n) ** -0.25 if self.deepnorm_beta is None else self.deepnorm_beta
    return alpha, beta

  def deepnorm_encdec(self) -> tuple[tuple[float, float], tuple[float, float]]:
    """DeepNet (Wang et al. 2022, Table 1) ((alpha, beta) of the encoder, of the decoder) for an
    encoder of N = n_layers and a decoder of M = decoder_layers layers:

      encoder  alpha = 0.81 (N^4 M)^(1/16),  beta = 0.87 (N^4 M)^(-1/16)
      decoder  alpha = (3M)^(1/4),           beta = (12M)^(-1/4)

    `deepnorm_alpha` / `deepnorm_beta`, when set, replace both stacks' values.
    """
    n, m = self.n_layers, self.decoder_layers
    encoder = (0.81 * (n ** 4 * m) ** (1 / 16), 0.87 * (n ** 4 * m) ** (-1 / 16))
    decoder = ((3 * m) ** 0.25, (12 * m) ** -0.25)

    def override(pair):
      alpha = pair[0] if self.deepnorm_alpha is None else self.deepnorm_alpha
      beta = pair[1] if self.deepnorm_beta is None else self.deepnorm_beta
      return alpha, beta

    return override(encoder), override(decoder)

  # ------------------------------------------------------------- derived counts

  def matmul_params_per_token(self) -> int:
    """Weights each token multiplies through: all matrices except the embedding lookup.

    MoE layers count the ACTIVE weights: the router and the `moe_top_k` experts a token is
    sent to, not all `moe_experts` (`registry.num_params` counts all of them). Tokens dropped for
    capacity are not discounted, so this is the nominal active count. An encoder_decoder
    model counts a token through the encoder and one through the decoder (self- and
    cross-attention, and the head).
    """
    encoder, decoder = self._stack_matmul_params()
    return encoder + decoder

  def _stack_matmul_params(self) -> tuple[int, int]:
    """(weights per encoder token, per decoder token incl. the head); decoder-only: (0, all)."""
    d, h = self.d_model, self.dim_per_head
    matrices = 3 if self.gated else 2
    attn = d * (self.n_heads + 2 * self.num_kv_heads) * h + self.n_heads * h * d
    dense_ffn = d * self.ffn_hidden * matrices
    moe_ffn = d * self.moe_experts + self.moe_top_k * d * self.expert_hidden * matrices

    def stack(layers: int, attentions: int) -> int:
      n_moe = layers // self.moe_every if self.moe_experts else 0
      return layers * attentions * attn + (layers - n_moe) * dense_ffn + n_moe * moe_ffn

    head = self._head_matmul_params()
    if self.family == "encoder_decoder":
      return stack(self.n_layers, 1), stack(self.decoder_layers, 2) + head
    return 0, stack(self.n_layers, 1) + head

  def _head_matmul_params(self) -> int:
    """Matrices outside the blocks: the LM head; for encoders, what their heads multiply."""
    d, e, v = self.d_model, self.embedding_width, self.vocab_size
    if self.family != "encoder":
      return d * v
    total = (e * d if self.embed_dim is not None else 0) + (d * d if self.pooler else 0)
    if "mlm" in self.encoder_heads:
      total += d * e + e * v
    return total

  def flops_per_token(self, seq_len: int, training: bool = True,
                      decoder_len: int | None = None) -> float:
    """Model FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B).

    Forward: 2 * matmul weights (active ones for MoE) + 2 * 2 * n_layers * seq_len * n_heads * head_dim for the
    attention scores and the weighted values (the causal half is not discounted, as in PaLM).
    An encoder_decoder model counts per encoder token, for seq_len encoder and decoder_len
    (None: seq_len) decoder tokens: its decoder's weights, self-attention over decoder_len and
    cross-attention over seq_len keys, scaled by decoder_len / seq_len.
    Training (forward + backward) is three times the forward.
    """
    nh = self.n_heads * self.dim_per_head
    encoder, decoder = self._stack_matmul_params()
    if self.family == "encoder_decoder":
      s, t = seq_len, seq_len if decoder_len is None else decoder_len
      m = self.decoder_layers
      row = (2 * (encoder * s + decoder * t)
             + 4 * nh * (self.n_layers * s * s + m * t * t + m * t * s))
      forward = row / s
    else:
      forward = 2 * decoder + 4 * self.n_layers * seq_len * nh
    return 3 * forward if training else forward

  # -------------------------------------------------------------- serialisation

  def to_dict(self) -> dict[str, Any]:
    return validate.to_dict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
    return validate.from_dict(cls, values)

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)


# The encoder-only block of fields above; other families must leave them at their defaults.
_ENCODER_FIELDS = ("embed_dim", "type_vocab_size", "position_padding_idx", "albert_sharing",
                   "pooler", "encoder_heads", "num_labels", "crf", "head_dropout")
