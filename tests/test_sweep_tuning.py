"""A learning rate tuned per variant (research.sweeps.tuning): the grid, the best value and
its edge flag, Wortsman et al.'s LR sensitivity, diverged runs at the loss at initialisation."""

from __future__ import annotations

import math

import pytest

from research.config import registry
from research.sweeps import Sweep, Tune, compare, hyper, log_grid, tuning

GRID = (1e-3, 3e-3, 1e-2, 3e-2)


def test_log_grid_is_one_three_ten():
  assert log_grid(3e-4, 1e-2) == (3e-4, 1e-3, 3e-3, 1e-2)
  assert log_grid(1e-3, 3e-2) == GRID
  assert tuning.Tune(values=log_grid(1e-4, 1.0)).values[-1] == 1.0


@pytest.mark.parametrize("values,needle", [
    ((1e-3, 3e-3, 1e-2), "at least 4 values"),
    ((1e-3, 1.5e-3, 1e-2, 3e-2), "1.50x apart"),      # too close
    ((1e-3, 1e-2, 3e-2, 1e-1), "10.00x apart"),       # too far
    ((3e-3, 1e-3, 1e-2, 3e-2), "0.33x apart"),        # not increasing
])
def test_a_grid_must_be_log_spaced_about_3x(values, needle):
  with pytest.raises(ValueError, match=needle):
    Tune(values=values)


@pytest.mark.parametrize("losses,best,edge", [
    ((2.5, 2.1, 2.3, 4.6), 3e-3, ""),
    ((2.0, 2.1, 2.3, 4.6), 1e-3, "low"),       # best at the lowest value: extend the grid down
    ((2.9, 2.5, 2.3, 2.2), 3e-2, "high"),
    ((2.1, 2.1, 2.3, 2.4), 1e-3, "low"),       # a tie goes to the lower value
])
def test_best_value_and_edge(losses, best, edge):
  choice = tuning.choose("v", GRID, losses, [False] * 4, l0=4.6)
  assert (choice.best, choice.best_loss, choice.edge) == (best, min(losses), edge)


def test_sensitivity_by_hand():
  # Wortsman et al. (2023): mean over the grid of min(loss, L0) minus the best loss. A run
  # that diverged (or ended above L0) counts as L0 = 4: (3 + 2 + 2.5 + 4) / 4 - 2 = 0.875.
  l0 = 4.0
  losses = [tuning.curve_loss("done", 3.0, l0), tuning.curve_loss("done", 2.0, l0),
            tuning.curve_loss("done", 2.5, l0), tuning.curve_loss("diverged", None, l0)]
  assert losses == [3.0, 2.0, 2.5, 4.0]
  assert tuning.sensitivity(losses, l0) == pytest.approx(0.875)
  assert tuning.curve_loss("done", math.nan, l0) == l0
  assert tuning.curve_loss("done", 7.5, l0) == l0
  assert tuning.curve_loss("failed", 2.0, l0) is None
  flat = tuning.choose("v", GRID, [2.0] * 4, [False] * 4, l0)
  assert flat.sensitivity == 0.0


def _grid_row(variant, lr, loss, status="done", seed=0):
  return {"point": f"act={variant},lr={lr},seed={seed}", "status": status, "tag.act": variant,
          "tag.lr": hyper.label(lr), "tag.seed": str(seed), "optimizer.lr": lr,
          "eval_loss": loss, "init_loss": math.log(96)}


def test_choices_from_grid_rows_count_divergence_and_wait_for_missing_points():
  tune = Tune(values=GRID)
  rows = ([_grid_row("a", lr, x) for lr, x in zip(GRID[:3], (2.4, 2.2, 2.3))]
          + [_grid_row("a", 3e-2, None, "diverged")]
          + [_grid_row("b", lr, x) for lr, x in zip(GRID[:3], (2.5, 2.4, 2.35))]
          + [_grid_row("b", 3e-2, None, "failed")])
  # A seed-phase row at the chosen value does not change the grid.
  rows.append(_grid_row("a", 3e-3, 1.0, seed=1))
  chosen = tuning.choices(rows, ["act=a", "act=b"], tune)
  a, b = chosen["act=a"], chosen["act=b"]
  assert a.best == 3e-3 and a.edge == "" and a.diverged == (False, False, False, True)
  assert a.losses[3] == pytest.approx(math.log(96))
  assert a.sensitivity == pytest.approx((2.4 + 2.2 + 2.3 + math.log(96)) / 4 - 2.2)
  assert not b.complete and b.losses[3] is None  # the failed point has no result yet


def test_a_tuned_sweep_declares_variants_only():
  base = registry.get("smoke")
  tune = Tune(values=GRID, seeds=3)
  sweep = Sweep(name="t", size="quick", base=base, tune=tune, reference="activation=relu",
                points=hyper.sweep("model.activation", ["gelu", "relu"]))
  assert sweep.variants() == ["activation=gelu", "activation=relu"]
  candidates = [p.name for p in sweep.candidates()]
  assert len(candidates) == 2 * 4 * 3 and candidates[0] == "activation=gelu,lr=0.001,seed=0"
  assert [p.name for p in tuning.final_points(sweep.points, tune, {"activation=relu": 1e-2})] == [
      f"activation=relu,lr=0.01,seed={s}" for s in range(3)]
  assert sweep.manifest()["tune"]["values"] == list(GRID)
  with pytest.raises(ValueError, match="sets 'seed'"):
    Sweep(name="t", size="quick", base=base, tune=tune,
          points=hyper.product([hyper.sweep("model.activation", ["gelu"]), hyper.seeds(2)]))
  with pytest.raises(ValueError, match="sets 'optimizer.lr'"):
    Sweep(name="t", size="quick", base=base, tune=tune, points=hyper.fixed({"optimizer.lr": 1e-3}))
  with pytest.raises(ValueError, match="Sweep.reference='activation=swiglu' is not a variant"):
    Sweep(name="t", size="quick", base=base, tune=tune, reference="activation=swiglu",
          points=hyper.sweep("model.activation", ["gelu"]))


def test_tuned_summary_compares_the_seeds_at_each_best():
  manifest = {"tune": Tune(values=GRID, seeds=3).to_dict(), "reference": "act=a",
              "variants": ["act=a", "act=b"]}
  rows = ([_grid_row("a", lr, x) for lr, x in zip(GRID, (2.4, 2.2, 2.3, 2.6))]
          + [_grid_row("a", 3e-3, x, seed=s) for s, x in ((1, 2.21), (2, 2.19))]
          + [_grid_row("b", lr, x) for lr, x in zip(GRID, (2.5, 2.4, 2.3, 2.1))]
          + [_grid_row("b", 3e-2, x, seed=s) for s, x in ((1, 2.11), (2, 2.09))])
  analysis = compare.analyse(rows, manifest)
  assert sorted(r["point"] for r in analysis.compared) == sorted(
      [f"act=a,lr=0.003,seed={s}" for s in range(3)] + [f"act=b,lr=0.03,seed={s}" for s in range(3)])
  a, b = analysis.summary
  assert (a["lr"], a["lr_edge"], a["verdict"]) == (3e-3, "", "reference")
  assert (b["lr"], b["lr_edge"], b["verdict"]) == (3e-2, "high", "better")
  assert b["mean"] == pytest.approx(2.10) and b["lr_sensitivity"] == pytest.approx(2.325 - 2.1)
  grid = compare.grid_rows(analysis)
  assert [(r["lr"], r["best"]) for r in grid if r["variant"] == "act=b"][-1] == (3e-2, True)
