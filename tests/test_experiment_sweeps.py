"""The ready sweeps of experiments/sweeps: every point of every size validates (shape-only),
each is tuned per variant with seeds at the chosen rate, and each varies what it says it
varies, at the parameter counts it promises."""

import pytest

from experiments import sweep as sweep_cli
from experiments import sweeps
from research.models.registry import num_params
from research.sweeps import SIZES, check

SIZE_NAMES = ("quick", "cpu", "full")


def test_sizes():
  assert SIZES == SIZE_NAMES


@pytest.mark.parametrize("size", SIZE_NAMES)
@pytest.mark.parametrize("name", sweeps.names())
def test_every_point_validates_and_is_tuned(name, size):
  sweep = sweeps.get(name, size)
  configs = check.point_configs(sweep)
  assert len(configs) == len(sweep.candidates())
  # Fair by construction: a learning-rate grid per variant, at least 4 values about 3x apart,
  # at least 3 seeds at each variant's best; a reference variant to compare with.
  assert sweep.tune is not None and sweep.tune.key == "optimizer.lr"
  assert len(sweep.tune.values) >= 4 and sweep.tune.seeds >= 3
  assert sweep.manifest()["reference"] in sweep.variants()
  assert "tuning" in sweep.plots


def _variants(name, axis, size="cpu"):
  """Variant label -> the config of its first candidate point."""
  sweep = sweeps.get(name, size)
  configs = check.point_configs(sweep)
  out = {}
  for p in sweep.candidates():
    out.setdefault(p.tags[axis], configs[p.name])
  return out


def test_cpu_size_is_the_default_config_near_convergence():
  from research.config import registry

  default = registry.get("default")
  cpu = sweeps.get("activation", "cpu").base
  assert cpu.train.steps == default.train.steps == 2000
  assert (cpu.model.d_model, cpu.model.n_layers, cpu.data.batch_size, cpu.data.seq_len) == (
      default.model.d_model, default.model.n_layers, default.data.batch_size, default.data.seq_len)
  assert default.optimizer.lr in sweeps.get("activation", "cpu").tune.values


@pytest.mark.parametrize("size", SIZE_NAMES)
def test_norm_placement_crosses_placement_with_warmup_without_clipping(size):
  sweep = sweeps.get("norm_placement", size)
  assert len(sweep.points) == 4 * 2
  configs = check.point_configs(sweep).values()
  assert {c.model.norm_placement for c in configs} == {"post", "pre", "sandwich", "deepnorm"}
  steps = sweep.base.train.steps
  assert {c.optimizer.warmup_steps for c in configs} == {0, steps // 20}
  assert {c.optimizer.grad_clip for c in configs} == {0.0}
  assert {c.model.norm for c in configs} == {"layernorm"}
  assert max(sweep.tune.values) >= 10 * sweep.base.optimizer.lr  # the unstable side in view


@pytest.mark.parametrize("size", SIZE_NAMES)
def test_activation_variants_have_matched_parameters(size):
  counts = {act: num_params(c.model) for act, c in _variants("activation", "activation", size).items()}
  assert set(counts) == {"relu", "gelu", "swish", "reglu", "geglu", "swiglu"}
  assert max(counts.values()) / min(counts.values()) < 1.003, counts


def test_position_encodings_share_one_embedding_treatment():
  sweep = sweeps.get("position")
  assert dict(sweep.measures[0].args)["multipliers"] == (1, 2, 4, 8)
  variants = _variants("position", "position")
  assert set(variants) == {"learned", "sinusoidal", "rope", "alibi", "t5", "none"}
  assert {c.model.embed_scale for c in variants.values()} == {True}
  assert sweep.metrics == ("eval_loss", "eval_loss@128", "eval_loss@256", "eval_loss@512")


@pytest.mark.parametrize("size", SIZE_NAMES)
def test_attention_heads_have_matched_parameters(size):
  variants = _variants("attention_heads", "heads", size)
  heads = {k: c.model.num_kv_heads for k, c in variants.items()}
  n = sweeps.get("attention_heads", size).base.model.n_heads
  assert heads == {f"mha{n}": n, "gqa2": 2, "mqa": 1}
  counts = [num_params(c.model) for c in variants.values()]
  assert max(counts) / min(counts) < 1.002, counts
  # The FFN makes up the K/V projections' difference.
  assert variants["mqa"].model.ffn_hidden > variants[f"mha{n}"].model.ffn_hidden


def test_moe_variants_keep_the_active_parameters():
  ffn = _variants("ffn_moe", "ffn")
  dense = ffn["dense"].model
  for variant in ("moe4-top1", "moe8-top2-half"):
    moe = ffn[variant].model
    router = moe.n_layers * moe.d_model * moe.moe_experts
    # Same active weights per token as the dense model, up to the router.
    assert moe.matmul_params_per_token() - router == dense.matmul_params_per_token()
    assert num_params(moe) > 1.5 * num_params(dense)


def test_cli_dry_run_lists_points_and_rejects_unknown_names(capsys):
  assert sweep_cli.main(["activation", "--dry-run", "train.steps=10"]) == 0
  out = capsys.readouterr().out
  # 6 activations x 4 learning rates x 3 seeds may run: the grid (seed 0), then 2 more seeds each.
  assert "72 valid points" in out and "activation=swiglu,lr=0.03,seed=0" in out
  assert "then 3 seeds of each variant at its best lr" in out and "36 runs in all" in out
  with pytest.raises(SystemExit):
    sweep_cli.parse(["activaton"])
  assert "did you mean activation" in capsys.readouterr().err
