"""Statistics of a sweep (research.sweeps.stats) and its per-variant summary
(research.sweeps.compare): intervals and verdicts on synthetic results with known answers."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from research.sweeps import compare, stats

# Student's t quantile t_{0.975} with 2 degrees of freedom (tables: 4.303).
T_975_2 = 4.302652729911275


def test_interval_of_a_mean_is_student_t():
  est = stats.estimate([1.0, 2.0, 3.0])
  half = T_975_2 * 1.0 / math.sqrt(3)  # std of 1, 2, 3 is 1
  assert (est.n, est.mean, est.std) == (3, 2.0, 1.0)
  assert est.ci_low == pytest.approx(2.0 - half) and est.ci_high == pytest.approx(2.0 + half)
  # One seed has a mean but no interval; non-finite values are not values.
  assert stats.estimate([2.5, math.nan]) == stats.Estimate(1, 2.5, None, None, None)
  assert stats.estimate([]).n == 0


def test_difference_is_welchs_t():
  a, b = [2.31, 2.29, 2.35, 2.28], [2.40, 2.33, 2.45]
  d = stats.welch(a, b)
  ref = scipy_stats.ttest_ind(a, b, equal_var=False)
  ci = ref.confidence_interval(0.95)
  assert d.p_value == pytest.approx(ref.pvalue, rel=1e-9)
  assert (d.ci_low, d.ci_high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
  assert d.diff == pytest.approx(sum(a) / 4 - sum(b) / 3)


@pytest.mark.parametrize("a,b,expected", [
    ([2.00, 2.01, 1.99], [2.30, 2.31, 2.29], "better"),                       # clearly lower loss
    ([2.30, 2.31, 2.29], [2.00, 2.01, 1.99], "worse"),
    ([2.00, 2.10, 1.90], [2.01, 1.91, 2.09], "not resolved (3 seeds)"),       # equal within noise
    ([2.00], [2.30, 2.31, 2.29], "not resolved (1 seed)"),                   # no interval
])
def test_verdict(a, b, expected):
  assert stats.verdict(stats.welch(a, b)) == expected


def test_verdict_for_a_throughput_prefers_higher():
  assert stats.verdict(stats.welch([110.0, 111, 109], [100.0, 101, 99]), lower_is_better=False) == "better"


def _row(variant, seed, loss, status="done", speed=None):
  return {"point": f"act={variant},seed={seed}", "status": status, "tag.act": variant,
          "tag.seed": str(seed), "eval_loss": loss, "init_loss": 4.0, "tokens_per_s": speed}


def test_summary_compares_every_variant_with_the_reference():
  rows = ([_row("relu", s, x, speed=100 + s) for s, x in enumerate([2.30, 2.31, 2.29])]
          + [_row("glu", s, x, speed=100 + s) for s, x in enumerate([2.20, 2.21, 2.19])]
          + [_row("gelu", s, x) for s, x in enumerate([2.29, 2.33, 2.27])]
          # A diverged seed counts at the loss at initialisation; a failed one not at all.
          + [_row("post", 0, 2.3), _row("post", 1, None, "diverged"), _row("post", 2, None, "failed")])
  manifest = {"reference": "act=relu", "metrics": ["eval_loss", "tokens_per_s"]}
  summary = {(r["variant"], r["metric"]): r for r in compare.analyse(rows, manifest).summary}
  relu, glu = summary["act=relu", "eval_loss"], summary["act=glu", "eval_loss"]
  assert relu["verdict"] == "reference" and relu["diff"] is None
  assert glu["verdict"] == "better" and glu["diff"] == pytest.approx(-0.1)
  assert glu["tag.act"] == "glu" and glu["n"] == 3 and glu["mean"] == pytest.approx(2.20)
  assert glu["ci95_low"] == pytest.approx(2.20 - T_975_2 * 0.01 / math.sqrt(3))
  assert summary["act=gelu", "eval_loss"]["verdict"] == "not resolved (3 seeds)"
  post = summary["act=post", "eval_loss"]
  assert post["n"] == 2 and post["mean"] == pytest.approx((2.3 + 4.0) / 2)
  assert summary["act=glu", "tokens_per_s"]["verdict"] == "not resolved (3 seeds)"
  assert summary["act=gelu", "tokens_per_s"]["verdict"] == "no data"
