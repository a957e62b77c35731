"""Plots of a sweep's results, each written as PNG and SVG (matplotlib, no display needed).

    PLOTS[name](analysis, sweep_dir, out_dir) -> [paths written]

`analysis` is research.sweeps.compare.Analysis; every plot but `tuning` draws the compared
runs (a tuned sweep's: each variant's seeds at its chosen learning rate), and intervals are
the 95% Student-t intervals of the mean over seeds (research.sweeps.stats).

curves      train and eval loss against step, one line per run (colour: variant)
final       final train and eval loss per variant: bar = mean, whiskers = 95% interval,
            dots = the seeds (a diverged run at the loss at initialisation)
tuning      final loss against the tuned value (learning rate), one curve per variant, as
            Wortsman et al. (2023, figure 1): diverged runs drawn as x at the loss at
            initialisation, each variant's best ringed with its seeds' interval
lengths     eval loss against evaluation length (position sweeps; `eval_loss@L` columns)
kv_cache    eval loss against KV-cache bytes per token, and cached decode speed
throughput  training tokens/s per variant, with total and active parameters

Figures are built with matplotlib's object API (`Figure`, not pyplot), so plotting from a
notebook or a headless job touches no global backend state.
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from research.sweeps import compare, results, stats

PlotFn = Callable[[compare.Analysis, pathlib.Path, pathlib.Path], list[pathlib.Path]]
PLOTS: dict[str, PlotFn] = {}
# Fixed SVG ids and no timestamps: re-running a report rewrites identical files.
_RC = {"svg.fonttype": "none", "svg.hashsalt": "research-sweeps", "font.size": 9}


def register(name: str):
  def wrap(fn: PlotFn) -> PlotFn:
    PLOTS[name] = fn
    return fn

  return wrap


def _figure(cols: int = 1, width: float = 5.0, height: float = 3.4):
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width * cols, height), layout="constrained")
  axes = fig.subplots(1, cols, squeeze=False)[0]
  return fig, list(axes)


def _save(fig, out_dir: pathlib.Path, stem: str) -> list[pathlib.Path]:
  import matplotlib

  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
  with matplotlib.rc_context(_RC):
    fig.savefig(paths[0], dpi=90, metadata={"Software": None}, pil_kwargs={"optimize": True})
    fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
  return paths


def _colours(keys: Sequence[str]) -> dict[str, Any]:
  import matplotlib

  cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"]
  return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def _short(key: str) -> str:
  """A variant label without axis names when they are clear: `post,0` for
  `norm_placement=post,warmup=0`."""
  return ",".join(part.split("=", 1)[-1] for part in key.split(","))


def _title(analysis: compare.Analysis, what: str) -> str:
  rows = analysis.compared or analysis.rows
  axes = [k[4:] for k in (rows[0] if rows else {})
          if k.startswith("tag.") and k[4:] not in analysis.exclude]
  return f"{what} by {' x '.join(axes)}" if axes else what


def _seeds_note(analysis: compare.Analysis) -> str:
  seeds = {r.get("tag.seed") for r in analysis.compared}
  return f"mean, 95% interval over {len(seeds)} seed(s)"


def _interval(values: Sequence[float]) -> tuple[float, list[list[float]]] | None:
  """(mean, matplotlib yerr) of the 95% interval, or None when there is no interval."""
  est = stats.estimate(values)
  if est.mean is None:
    return None
  if est.ci_low is None:
    return est.mean, [[0.0], [0.0]]
  return est.mean, [[est.mean - est.ci_low], [est.ci_high - est.mean]]


@register("curves")
def loss_curves(analysis, sweep_dir: pathlib.Path, out_dir: pathlib.Path) -> list[pathlib.Path]:
  fig, (train_ax, eval_ax) = _figure(2)
  colour = _colours(analysis.variants)
  styles = ("-", "--", ":", "-.")
  seen_seeds: dict[str, int] = {}
  for r in analysis.compared:
    key = analysis.variant(r)
    n = seen_seeds[key] = seen_seeds.get(key, -1) + 1
    data = results.curves(sweep_dir / r["point"])
    for ax, name in ((train_ax, "loss"), (eval_ax, "eval_loss")):
      if data[name]:
        steps, values = zip(*data[name])
        ax.plot(steps, values, styles[n % len(styles)], color=colour[key], lw=1.2,
                label=_short(key) if n == 0 else None, marker="o" if len(steps) < 4 else None, ms=3)
  for ax, name in ((train_ax, "train loss"), (eval_ax, "eval loss")):
    ax.set_xlabel("step")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    _clip_y(ax, analysis.compared, "train_loss" if name == "train loss" else "eval_loss")
  train_ax.legend(fontsize=7, ncol=2)
  fig.suptitle(_title(analysis, "loss curves") + " (line style: seed)")
  return _save(fig, out_dir, "loss_curves")


def _clip_y(ax, rows, metric: str) -> None:
  """Start the y axis a little above the finals' range rather than at the first, huge losses."""
  finals = [r[metric] for r in rows if isinstance(r.get(metric), float) and math.isfinite(r[metric])]
  if finals:
    lo, hi = min(finals), max(finals)
    ax.set_ylim(lo - 0.1 * (hi - lo + 0.1), hi + 1.5 * (hi - lo + 0.1))


def _bars(ax, groups: dict[str, list[float]], colour, ylabel: str) -> None:
  keys = [k for k, v in groups.items() if v]
  for i, key in enumerate(keys):
    values = groups[key]
    mean, yerr = _interval(values)
    ax.bar(i, mean, color=colour[key], alpha=0.75)
    if len(values) > 1:
      ax.errorbar(i, mean, yerr=yerr, color="black", capsize=3, lw=1)
    ax.plot([i] * len(values), values, "o", color="black", ms=2.5)
  ax.set_xticks(range(len(keys)), [_short(k) for k in keys], rotation=35, ha="right", fontsize=7)
  ax.set_ylabel(ylabel)
  # The range covers the seeds and their intervals.
  all_values = [v for k in keys for v in groups[k]]
  for k in keys:
    est = stats.estimate(groups[k])
    all_values += [x for x in (est.ci_low, est.ci_high) if x is not None]
  if all_values:
    lo, hi = min(all_values), max(all_values)
    pad = 0.15 * (hi - lo) + 0.02
    ax.set_ylim(lo - 4 * pad, hi + pad)
  ax.grid(axis="y", alpha=0.3)


def _by_variant(analysis, metric: str) -> dict[str, list[float]]:
  return {v: analysis.values(v, metric) for v in analysis.variants}


@register("final")
def final_loss(analysis, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, axes = _figure(2)
  colour = _colours(analysis.variants)
  _bars(axes[0], _by_variant(analysis, "train_loss"), colour, "final train loss")
  _bars(axes[1], _by_variant(analysis, "eval_loss"), colour, "final eval loss")
  fig.suptitle(_title(analysis, "final loss") + f" ({_seeds_note(analysis)})")
  return _save(fig, out_dir, "final_loss")


@register("tuning")
def loss_vs_tuned(analysis, sweep_dir, out_dir) -> list[pathlib.Path]:
  tune = analysis.tune
  if tune is None:
    return []
  fig, (ax,) = _figure(1, width=5.5, height=3.8)
  colour = _colours(analysis.variants)
  l0s = set()
  for variant, choice in analysis.choices.items():
    points = [(x, y, d) for x, y, d in zip(choice.values, choice.losses, choice.diverged) if y is not None]
    if not points:
      continue
    l0s.add(choice.init_loss)
    xs, ys, diverged = zip(*points)
    ax.plot(xs, ys, "-", color=colour[variant], lw=1.2, label=_short(variant)
            + (f" (best at {choice.edge} edge)" if choice.edge else ""))
    ax.plot([x for x, d in zip(xs, diverged) if not d], [y for y, d in zip(ys, diverged) if not d],
            "o", color=colour[variant], ms=3)
    ax.plot([x for x, d in zip(xs, diverged) if d], [y for y, d in zip(ys, diverged) if d],
            "x", color=colour[variant], ms=6, mew=1.5)
    seeds = analysis.values(variant, tune.metric)
    if choice.complete and seeds:
      mean, yerr = _interval(seeds)
      ax.errorbar(choice.best, mean, yerr=yerr, fmt="o", mfc="none", ms=8, color=colour[variant],
                  capsize=3, lw=1)
  ax.set_xscale("log")
  ax.set_xticks(tune.values, [f"{v:g}" for v in tune.values])
  ax.set_xlabel(f"{tune.key} (grid: {tune.grid_seeds} seed(s); ring: {tune.seeds} seeds, 95% interval)")
  ax.set_ylabel(f"final {tune.metric}")
  finite = [y for c in analysis.choices.values() for y in c.losses if y is not None]
  for v in analysis.variants:
    est = stats.estimate(analysis.values(v, tune.metric))
    finite += [x for x in (est.ci_low, est.ci_high) if x is not None]
  if finite:
    # Up to the loss at initialisation when a curve reaches it (diverged or capped runs).
    top = max(finite) + 0.1 if max(finite) < min(l0s, default=math.inf) else max(l0s) + 0.1
    ax.set_ylim(min(finite) - 0.05 * (max(finite) - min(finite) + 0.1), top)
  for l0 in l0s:
    if l0 < ax.get_ylim()[1]:
      ax.axhline(l0, color="grey", ls=":", lw=1)
      ax.annotate("loss at init (diverged: x)", xy=(0.01, l0), xycoords=("axes fraction", "data"),
                  fontsize=7, color="grey", va="bottom")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title(_title(analysis, f"loss vs {tune.axis}"), fontsize=9)
  return _save(fig, out_dir, f"loss_vs_{tune.axis}")


_LENGTH = re.compile(r"^eval_loss@(\d+)$")


@register("lengths")
def loss_vs_length(analysis, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, (ax,) = _figure(1, width=5.5, height=3.8)
  rows = analysis.compared
  lengths = sorted({int(m.group(1)) for r in rows for k in r if (m := _LENGTH.match(k))})
  keys = analysis.variants
  colour = _colours(keys)
  for key in keys:
    xs, means, lows, highs, missing = [], [], [], [], []
    for length in lengths:
      est = stats.estimate(analysis.values(key, f"eval_loss@{length}"))
      if est.mean is not None:
        xs.append(length)
        means.append(est.mean)
        lows.append(est.mean if est.ci_low is None else est.ci_low)
        highs.append(est.mean if est.ci_high is None else est.ci_high)
      else:
        missing.append(length)
    if xs:
      ax.plot(xs, means, "o-", color=colour[key], label=_short(key), ms=3)
      ax.fill_between(xs, lows, highs, color=colour[key], alpha=0.2)
    if missing and xs:
      ax.annotate(f"{_short(key)}: not measurable at {', '.join(map(str, missing))}",
                  xy=(0.02, 0.02 + 0.06 * keys.index(key)), xycoords="axes fraction", fontsize=7,
                  color=colour[key])
  ax.set_xscale("log", base=2)
  ax.set_xticks(lengths, [str(n) for n in lengths])
  ax.set_xlabel("evaluation length (tokens); trained at the first")
  ax.set_ylabel("eval loss")
  finals = [v for r in rows for k, v in r.items() if _LENGTH.match(k) and isinstance(v, float)]
  if finals:
    best = min(finals)
    ax.set_ylim(best - 0.1, min(max(finals), best + 2.5) + 0.1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, title=f"band: {_seeds_note(analysis)}", title_fontsize=7)
  ax.set_title(_title(analysis, "eval loss vs evaluation length"), fontsize=9)
  return _save(fig, out_dir, "loss_vs_length")


@register("kv_cache")
def kv_cache(analysis, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, (loss_ax, speed_ax) = _figure(2)
  colour = _colours(analysis.variants)
  for key in analysis.variants:
    losses = analysis.values(key, "eval_loss")
    kv_bytes = analysis.values(key, "kv_cache_bytes_per_token")
    if losses and kv_bytes:
      mean, yerr = _interval(losses)
      loss_ax.errorbar(kv_bytes[0], mean, yerr=yerr, fmt="o", color=colour[key], capsize=3,
                       label=_short(key))
  loss_ax.set_xscale("log", base=2)
  loss_ax.set_xlabel("KV-cache bytes per token")
  loss_ax.set_ylabel("final eval loss")
  loss_ax.grid(alpha=0.3)
  loss_ax.legend(fontsize=7)
  _bars(speed_ax, _by_variant(analysis, "decode_tokens_per_s"), colour, "cached decode tokens/s")
  speed_ax.set_ylim(bottom=0)
  fig.suptitle(_title(analysis, "quality, KV cache and decode speed") + f" ({_seeds_note(analysis)})")
  return _save(fig, out_dir, "kv_cache")


@register("throughput")
def throughput(analysis, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, (ax,) = _figure(1, width=5.5)
  colour = _colours(analysis.variants)
  rates = _by_variant(analysis, "tokens_per_s")
  _bars(ax, rates, colour, "training tokens/s")
  ax.set_ylim(bottom=0)
  for i, key in enumerate(k for k in analysis.variants if rates[k]):
    r = next(r for r in analysis.compared if analysis.variant(r) == key)
    if r.get("params") and r.get("active_params"):
      ax.annotate(f"{r['params'] / 1e3:.0f}k total\n{r['active_params'] / 1e3:.0f}k active matmul",
                  xy=(i, 0), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=6)
  ax.set_title(_title(analysis, "training throughput"))
  return _save(fig, out_dir, "throughput")
