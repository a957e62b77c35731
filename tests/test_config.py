import pytest

from research.config import ModelConfig, model as model_config
from research.layers import activations


def test_defaults_build():
  cfg = ModelConfig()
  assert cfg.num_kv_heads == cfg.n_heads
  assert cfg.dim_per_head == cfg.d_model // cfg.n_heads


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("norm", "batchnorm", "ModelConfig.norm='batchnorm' is not allowed; choose one of: 'layernorm', 'rmsnorm'"),
        ("activation", "tanh", "ModelConfig.activation='tanh'"),
        ("position", "xpos", "'alibi'"),
        ("norm_placement", "middle", "'deepnorm'"),
        ("d_model", 0, "ModelConfig.d_model=0 must be > 0"),
        ("attn_dropout", 1.5, "ModelConfig.attn_dropout=1.5 must lie in"),
    ],
)
def test_bad_value_names_field_value_and_allowed(field, value, needle):
  with pytest.raises(ValueError) as err:
    ModelConfig(**{field: value})
  assert needle in str(err.value)


def test_divisibility_errors_name_both_fields():
  with pytest.raises(ValueError, match=r"d_model=100 must be divisible by ModelConfig.n_heads=8"):
    ModelConfig(d_model=100, n_heads=8)
  with pytest.raises(ValueError, match=r"n_heads=8 must be divisible by ModelConfig.n_kv_heads=3"):
    ModelConfig(n_heads=8, n_kv_heads=3)


def test_rotary_dims_must_be_even_and_positive():
  with pytest.raises(ValueError, match="rotary dims"):
    ModelConfig(d_model=64, n_heads=4, rope_fraction=0.05)  # 16 * 0.05 -> 0 dims
  assert ModelConfig(d_model=64, n_heads=4, rope_fraction=0.25).rope_dims == 4


def test_parallel_block_refuses_sandwich():
  with pytest.raises(ValueError, match="parallel_block"):
    ModelConfig(parallel_block=True, norm_placement="sandwich")


def test_deepnorm_overrides_need_deepnorm():
  with pytest.raises(ValueError, match="deepnorm_alpha"):
    ModelConfig(deepnorm_alpha=2.0)


def test_activation_lists_agree():
  assert set(model_config.ACTIVATIONS) == set(activations.ACTIVATIONS)
  assert set(model_config.GATED_ACTIVATIONS) == {n for n, (_, g) in activations.ACTIVATIONS.items() if g}


def test_glu_two_thirds_adjustment():
  dense = ModelConfig(d_model=768, n_heads=12, activation="gelu")
  glu = ModelConfig(d_model=768, n_heads=12, activation="swiglu")
  assert dense.ffn_hidden == 3072
  assert glu.ffn_hidden == 2048
  assert ModelConfig(d_model=768, n_heads=12, activation="swiglu", glu_param_matched=False).ffn_hidden == 3072
  assert ModelConfig(d_model=4096, n_heads=32, ffn_multiple_of=256).ffn_hidden == 11008


def test_dict_round_trip_and_unknown_key():
  cfg = ModelConfig(d_model=64, n_heads=4, n_kv_heads=2)
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match=r"no field 'n_head'.*did you mean n_heads"):
    ModelConfig.from_dict({"n_head": 4})


def test_deepnorm_coefficients_follow_the_paper():
  # DeepNet Table 1, decoder-only with N layers: alpha = (2N)^(1/4), beta = (8N)^(-1/4).
  alpha, beta = ModelConfig(n_layers=12, norm_placement="deepnorm").deepnorm()
  assert alpha == pytest.approx(24 ** 0.25)
  assert beta == pytest.approx(96 ** -0.25)
  # 200 layers: alpha = 400^(1/4) = 4.4721, beta = 1600^(-1/4) = 0.15811.
  alpha, beta = ModelConfig(n_layers=200, norm_placement="deepnorm").deepnorm()
  assert alpha == pytest.approx(4.4721, abs=1e-4)
  assert beta == pytest.approx(0.15811, abs=1e-5)
  assert ModelConfig(norm_placement="deepnorm", deepnorm_alpha=3.0).deepnorm()[0] == 3.0


def test_flops_per_token_is_six_n_plus_attention():
  cfg = ModelConfig(d_model=512, n_layers=8, n_heads=8, vocab_size=1000, activation="gelu")
  n = cfg.matmul_params_per_token()
  assert n == 8 * (4 * 512 * 512 + 2 * 512 * 2048) + 512 * 1000
  assert cfg.flops_per_token(256) == 6 * n + 12 * 8 * 256 * 512
  assert cfg.flops_per_token(256, training=False) * 3 == cfg.flops_per_token(256)


def test_remat_lists_agree():
  from research.layers.stack import REMAT_POLICIES

  assert set(model_config.REMAT_POLICIES) == {"auto", "none", *REMAT_POLICIES}


def test_auto_remat_checkpoints_the_scanned_stack_only():
  scanned = model_config.ModelConfig()
  assert scanned.remat == "auto" and scanned.remat_policy == "dots_no_batch"
  assert scanned.replace(scan_layers=False).remat_policy == "none"
  assert scanned.replace(remat="full", scan_layers=False).remat_policy == "full"


def test_objective_lists_agree():
  from research.config.train import OBJECTIVES
  from research.train import objectives

  assert set(OBJECTIVES) == set(objectives.OBJECTIVES)


@pytest.mark.parametrize(
    "changes,needle",
    [
        (dict(moe_experts=4, moe_top_k=5), "ModelConfig.moe_top_k=5 must lie in [1, 4]"),
        (dict(moe_experts=4, n_layers=6, moe_every=4),
         "ModelConfig.n_layers=6 must be divisible by ModelConfig.moe_every=4"),
        (dict(moe_experts=4, moe_priority="random"), "ModelConfig.moe_priority='random'"),
        (dict(moe_experts=4, moe_capacity_factor=0.0), "moe_capacity_factor=0.0 must be > 0"),
        (dict(moe_experts=4, moe_aux_weight=-1.0), "moe_aux_weight=-1.0 must be >= 0"),
        (dict(moe_experts=-1), "moe_experts=-1 must be >= 0"),
    ],
)
def test_moe_fields_are_validated(changes, needle):
  with pytest.raises(ValueError) as err:
    ModelConfig(**changes)
  assert needle in str(err.value)


def test_moe_flops_count_active_experts_and_params_count_all():
  from research.models.registry import num_params  # JAX; the other tests here do without

  dense = ModelConfig(d_model=64, n_heads=4, n_layers=4, vocab_size=100, activation="swiglu")
  moe = dense.replace(moe_experts=8, moe_top_k=2, moe_every=2)
  ffn = 3 * 64 * dense.ffn_hidden
  # Two MoE layers: each adds a router and a second active expert to the dense count.
  assert moe.matmul_params_per_token() == dense.matmul_params_per_token() + 2 * (64 * 8 + ffn)
  assert num_params(moe) == num_params(dense) + 2 * (64 * 8 + 7 * ffn)
  assert moe.replace(moe_d_ff=32).expert_hidden == 32


# ------------------------------------------------------------- encoder-decoder and prefix-LM


def test_deepnorm_encoder_decoder_coefficients_follow_the_paper():
  # DeepNet Table 1, encoder-decoder with N encoder and M decoder layers:
  # encoder alpha = 0.81 (N^4 M)^(1/16), beta = 0.87 (N^4 M)^(-1/16);
  # decoder alpha = (3M)^(1/4), beta = (12M)^(-1/4).
  cfg = ModelConfig(family="encoder_decoder", n_layers=18, n_decoder_layers=6,
                    norm_placement="deepnorm")
  (enc_alpha, enc_beta), (dec_alpha, dec_beta) = cfg.deepnorm_encdec()
  x = 18 ** 4 * 6
  assert enc_alpha == pytest.approx(0.81 * x ** (1 / 16))
  assert enc_beta == pytest.approx(0.87 * x ** (-1 / 16))
  assert dec_alpha == pytest.approx(18 ** 0.25) and dec_beta == pytest.approx(72 ** -0.25)
  # The paper's 200-layer example (N = M = 100): encoder alpha = 0.81 * 10^(10/16) = 3.4157.
  (enc_alpha, enc_beta), (dec_alpha, _) = cfg.replace(
      n_layers=100, n_decoder_layers=100).deepnorm_encdec()
  assert enc_alpha == pytest.approx(3.4157, abs=1e-4)
  assert enc_beta == pytest.approx(0.87 * 10 ** (-10 / 16))
  assert dec_alpha == pytest.approx(300 ** 0.25)
  overridden = cfg.replace(deepnorm_alpha=2.0).deepnorm_encdec()
  assert overridden[0][0] == overridden[1][0] == 2.0


def test_encoder_decoder_flops_count_both_stacks():
  enc = ModelConfig(family="encoder_decoder", d_model=64, n_heads=4, n_layers=2,
                    n_decoder_layers=3, vocab_size=100, activation="relu", d_ff=128)
  attn, ffn = 4 * 64 * 64, 2 * 64 * 128
  assert enc.matmul_params_per_token() == 2 * (attn + ffn) + 3 * (2 * attn + ffn) + 64 * 100
  assert enc.flops_per_token(16, training=False) == (
      2 * enc.matmul_params_per_token() + 4 * (2 + 2 * 3) * 16 * 64)
  # A decoder 4 tokens long per 16 encoder tokens: its weights and attention count a quarter.
  enc_w, dec_w = 2 * (attn + ffn), 3 * (2 * attn + ffn) + 64 * 100
  row = 2 * (16 * enc_w + 4 * dec_w) + 4 * 64 * (2 * 16 * 16 + 3 * 4 * 4 + 3 * 4 * 16)
  assert enc.flops_per_token(16, training=False, decoder_len=4) == pytest.approx(row / 16)
