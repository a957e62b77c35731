"""What a handful of seeds can say: mean, spread, a 95% interval, and a verdict against a reference.

    est = stats.estimate([2.31, 2.29, 2.30])        # n, mean, std, ci_low, ci_high
    diff = stats.welch([2.25, 2.26, 2.24], [2.31, 2.29, 2.30])
    stats.verdict(diff)                             # "better" (lower loss), "worse", "not resolved (3 seeds)"

The interval of a mean is Student's t with n - 1 degrees of freedom; a difference of two means
is Welch's unequal-variance t (Welch 1947), with the Welch-Satterthwaite degrees of freedom,
so the interval and the p-value agree with scipy.stats.ttest_ind(equal_var=False). A verdict
is `better` or `worse` only when the 95% interval of the difference excludes zero (p < 0.05);
otherwise the seeds cannot tell the two apart and the verdict says how many there were.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

from scipy import stats as scipy_stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean over seeds with its sample standard deviation and Student-t interval (None where
  undefined: no interval from a single seed)."""

  n: int
  mean: float | None
  std: float | None
  ci_low: float | None
  ci_high: float | None


@dataclasses.dataclass(frozen=True)
class Difference:
  """mean(a) - mean(b), its Welch interval and two-sided p-value; n_a, n_b seeds."""

  n_a: int
  n_b: int
  diff: float | None
  ci_low: float | None
  ci_high: float | None
  p_value: float | None


def _finite(values: Sequence[float]) -> list[float]:
  return [float(v) for v in values if v is not None and math.isfinite(v)]


def estimate(values: Sequence[float], level: float = LEVEL) -> Estimate:
  values = _finite(values)
  n = len(values)
  if n == 0:
    return Estimate(0, None, None, None, None)
  mean = statistics.fmean(values)
  if n == 1:
    return Estimate(1, mean, None, None, None)
  std = statistics.stdev(values)
  half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
  return Estimate(n, mean, std, mean - half, mean + half)


def welch(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Difference:
  """mean(a) - mean(b) with Welch's t interval; undefined (None) with fewer than 2 values each."""
  a, b = _finite(a), _finite(b)
  if len(a) < 2 or len(b) < 2:
    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else None
    return Difference(len(a), len(b), diff, None, None, None)
  diff = statistics.fmean(a) - statistics.fmean(b)
  va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
  se = math.sqrt(va + vb)
  if se == 0.0:
    # Both sets constant: any difference is exact.
    return Difference(len(a), len(b), diff, diff, diff, 1.0 if diff == 0.0 else 0.0)
  # Welch-Satterthwaite degrees of freedom.
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * se
  p = 2.0 * float(scipy_stats.t.sf(abs(diff) / se, df))
  return Difference(len(a), len(b), diff, diff - half, diff + half, p)


def verdict(d: Difference, lower_is_better: bool = True) -> str:
  """`better` / `worse` when the interval of the difference (variant minus reference) excludes
  zero, else `not resolved (N seeds)`, N the variant's seeds."""
  if d.ci_low is not None and d.ci_low > 0.0:
    return "worse" if lower_is_better else "better"
  if d.ci_high is not None and d.ci_high < 0.0:
    return "better" if lower_is_better else "worse"
  return f"not resolved ({d.n_a} seed{'s' if d.n_a != 1 else ''})"
