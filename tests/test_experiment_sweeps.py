"""The ready sweeps of experiments/sweeps: every point of both sizes validates (shape-only),
and each sweep varies what it says it varies, at the parameter counts it promises."""

import pytest

from experiments import sweep as sweep_cli
from experiments import sweeps
from research.sweeps import check


@pytest.mark.parametrize("size", ["cpu", "full"])
@pytest.mark.parametrize("name", sweeps.names())
def test_every_point_validates(name, size):
  sweep = sweeps.get(name, size)
  configs = check.point_configs(sweep)
  assert len(configs) == len(sweep.points)


def _by_tag(name, axis, size="cpu"):
  sweep = sweeps.get(name, size)
  configs = check.point_configs(sweep)
  return {p.tags[axis]: configs[p.name] for p in sweep.points if p.tags.get("seed") == "0"}


def test_norm_placement_crosses_placement_with_warmup_at_a_high_lr():
  sweep = sweeps.get("norm_placement")
  assert len(sweep.points) == 4 * 2 * 2
  configs = check.point_configs(sweep)
  placements = {c.model.norm_placement for c in configs.values()}
  assert placements == {"post", "pre", "sandwich", "deepnorm"}
  assert {c.optimizer.warmup_steps for c in configs.values()} == {0, 100}
  assert {c.optimizer.lr for c in configs.values()} == {10 * sweeps.get("activation").base.optimizer.lr}


def test_activation_variants_have_matched_parameters():
  counts = {act: c.model.num_params() for act, c in _by_tag("activation", "activation").items()}
  assert set(counts) == {"relu", "gelu", "swish", "reglu", "geglu", "swiglu"}
  assert max(counts.values()) / min(counts.values()) < 1.01, counts


def test_position_sweep_measures_four_lengths():
  sweep = sweeps.get("position")
  assert dict(sweep.measures[0].args)["multipliers"] == (1, 2, 4, 8)
  assert set(_by_tag("position", "position")) == {"learned", "sinusoidal", "rope", "alibi", "t5", "none"}


def test_attention_heads_and_moe_variants():
  heads = {k: c.model.num_kv_heads for k, c in _by_tag("attention_heads", "heads").items()}
  assert heads == {"mha4": 4, "gqa2": 2, "mqa": 1}
  ffn = _by_tag("ffn_moe", "ffn")
  dense = ffn["dense"].model
  for variant in ("moe4-top1", "moe8-top2-half"):
    moe = ffn[variant].model
    router = moe.n_layers * moe.d_model * moe.moe_experts
    # Same active weights per token as the dense model, up to the router.
    assert moe.matmul_params_per_token() - router == dense.matmul_params_per_token()
    assert moe.num_params() > 1.5 * dense.num_params()


def test_cli_dry_run_lists_points_and_rejects_unknown_names(capsys):
  assert sweep_cli.main(["activation", "--dry-run", "train.steps=10"]) == 0
  out = capsys.readouterr().out
  assert "12 valid points" in out and "activation=swiglu,seed=1" in out
  with pytest.raises(SystemExit):
    sweep_cli.parse(["activaton"])
  assert "did you mean activation" in capsys.readouterr().err
