"""Plots of a sweep's results, each written as PNG and SVG (matplotlib, no display needed).

    PLOTS[name](rows, sweep_dir, out_dir) -> [paths written]

curves      train and eval loss against step, one line per run (colour: configuration)
final       final train and eval loss per configuration: bar = mean over seeds, whiskers =
            min..max, dots = the seeds
lengths     eval loss against evaluation length (position sweeps; `eval_loss@L` columns)
kv_cache    eval loss against KV-cache bytes per token, and cached decode speed
throughput  training tokens/s per configuration, with total and active parameters

Figures are built with matplotlib's object API (`Figure`, not pyplot), so plotting from a
notebook or a headless job touches no global backend state.
"""

from __future__ import annotations

import math
import pathlib
import re
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from research.sweeps import results

PlotFn = Callable[[Sequence[dict[str, Any]], pathlib.Path, pathlib.Path], list[pathlib.Path]]
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


def _groups(rows) -> list[str]:
  keys: list[str] = []
  for r in rows:
    if results.group_key(r) not in keys:
      keys.append(results.group_key(r))
  return keys


def _short(key: str) -> str:
  """A configuration label without axis names when they are clear: `post,none` for
  `norm_placement=post,warmup=none`."""
  return ",".join(part.split("=", 1)[-1] for part in key.split(","))


def _title(rows, what: str) -> str:
  axes = [k[4:] for k in (rows[0] if rows else {}) if k.startswith("tag.") and k != "tag.seed"]
  return f"{what} by {' x '.join(axes)}" if axes else what


@register("curves")
def loss_curves(rows, sweep_dir: pathlib.Path, out_dir: pathlib.Path) -> list[pathlib.Path]:
  fig, (train_ax, eval_ax) = _figure(2)
  keys = _groups(rows)
  colour = _colours(keys)
  styles = ("-", "--", ":", "-.")
  seen_seeds: dict[str, int] = {}
  for r in rows:
    key = results.group_key(r)
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
    _clip_y(ax, rows, "train_loss" if name == "train loss" else "eval_loss")
  train_ax.legend(fontsize=7, ncol=2)
  fig.suptitle(_title(rows, "loss curves") + " (line style: seed)")
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
    mean = statistics.fmean(values)
    ax.bar(i, mean, color=colour[key], alpha=0.75)
    if len(values) > 1:
      ax.errorbar(i, mean, yerr=[[mean - min(values)], [max(values) - mean]], color="black",
                  capsize=3, lw=1)
    ax.plot([i] * len(values), values, "o", color="black", ms=2.5)
  ax.set_xticks(range(len(keys)), [_short(k) for k in keys], rotation=35, ha="right", fontsize=7)
  ax.set_ylabel(ylabel)
  all_values = [v for k in keys for v in groups[k]]
  if all_values:
    lo, hi = min(all_values), max(all_values)
    pad = 0.15 * (hi - lo) + 0.02
    ax.set_ylim(lo - 4 * pad, hi + pad)
  ax.grid(axis="y", alpha=0.3)


@register("final")
def final_loss(rows, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, axes = _figure(2)
  colour = _colours(_groups(rows))
  _bars(axes[0], results.group(rows, "train_loss"), colour, "final train loss")
  _bars(axes[1], results.group(rows, "eval_loss"), colour, "final eval loss")
  seeds = {r.get("tag.seed") for r in rows}
  fig.suptitle(_title(rows, "final loss") + f" (mean, min..max over {len(seeds)} seed(s))")
  return _save(fig, out_dir, "final_loss")


_LENGTH = re.compile(r"^eval_loss@(\d+)$")


@register("lengths")
def loss_vs_length(rows, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, (ax,) = _figure(1, width=5.5, height=3.8)
  lengths = sorted({int(m.group(1)) for r in rows for k in r if (m := _LENGTH.match(k))})
  keys = _groups(rows)
  colour = _colours(keys)
  for key in keys:
    xs, means, lows, highs, missing = [], [], [], [], []
    for length in lengths:
      values = results.group([r for r in rows if results.group_key(r) == key], f"eval_loss@{length}")[key]
      if values:
        xs.append(length)
        means.append(statistics.fmean(values))
        lows.append(min(values))
        highs.append(max(values))
      else:
        missing.append(length)
    if xs:
      ax.plot(xs, means, "o-", color=colour[key], label=_short(key), ms=3)
      ax.fill_between(xs, lows, highs, color=colour[key], alpha=0.2)
    if missing:
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
  ax.legend(fontsize=7, title="mean; band: min..max over seeds", title_fontsize=7)
  ax.set_title(_title(rows, "eval loss vs evaluation length"), fontsize=9)
  return _save(fig, out_dir, "loss_vs_length")


@register("kv_cache")
def kv_cache(rows, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, (loss_ax, speed_ax) = _figure(2)
  keys = _groups(rows)
  colour = _colours(keys)
  losses = results.group(rows, "eval_loss")
  kv_bytes = results.group(rows, "kv_cache_bytes_per_token")
  for key in keys:
    if losses[key] and kv_bytes[key]:
      mean = statistics.fmean(losses[key])
      loss_ax.errorbar(kv_bytes[key][0], mean, yerr=[[mean - min(losses[key])], [max(losses[key]) - mean]],
                       fmt="o", color=colour[key], capsize=3, label=_short(key))
  loss_ax.set_xscale("log", base=2)
  loss_ax.set_xlabel("KV-cache bytes per token")
  loss_ax.set_ylabel("final eval loss")
  loss_ax.grid(alpha=0.3)
  loss_ax.legend(fontsize=7)
  _bars(speed_ax, results.group(rows, "decode_tokens_per_s"), colour, "cached decode tokens/s")
  speed_ax.set_ylim(bottom=0)
  fig.suptitle(_title(rows, "quality, KV cache and decode speed"))
  return _save(fig, out_dir, "kv_cache")


@register("throughput")
def throughput(rows, sweep_dir, out_dir) -> list[pathlib.Path]:
  fig, (ax,) = _figure(1, width=5.5)
  keys = _groups(rows)
  colour = _colours(keys)
  _bars(ax, results.group(rows, "tokens_per_s"), colour, "training tokens/s")
  ax.set_ylim(bottom=0)
  for i, key in enumerate(k for k in keys if results.group(rows, "tokens_per_s")[k]):
    r = next(r for r in rows if results.group_key(r) == key)
    if r.get("params") and r.get("active_params"):
      ax.annotate(f"{r['params'] / 1e3:.0f}k total\n{r['active_params'] / 1e3:.0f}k active matmul",
                  xy=(i, 0), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=6)
  ax.set_title(_title(rows, "training throughput"))
  return _save(fig, out_dir, "throughput")
