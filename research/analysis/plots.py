"""Figures of a `Trace`: attention maps, per-layer statistics, the logit lens.

Each function returns a matplotlib `Figure` (built without pyplot, so it displays in a
notebook and saves headless alike); `save(fig, "out/attention")` writes PNG and SVG.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from research.analysis.capture import Trace
from research.analysis.logit_lens import Lens


def _figure(rows: int, cols: int, width: float, height: float):
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), layout="constrained")
  return fig, fig.subplots(rows, cols, squeeze=False)


def save(fig, stem: str | pathlib.Path) -> list[pathlib.Path]:
  stem = pathlib.Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
  fig.savefig(paths[0], dpi=110)
  fig.savefig(paths[1])
  return paths


def _labels(tokens: Sequence[str] | None, n: int) -> list[str]:
  if tokens is None:
    return [str(i) for i in range(n)]
  return [repr(t)[1:-1] or "·" for t in tokens[:n]]


def attention_maps(trace: Trace, batch: int = 0, layers: Sequence[int] | None = None,
                   heads: Sequence[int] | None = None, tokens: Sequence[str] | None = None):
  """A grid of attention maps, one row per layer and one column per head (query down, key
  across), over the real tokens of row `batch`."""
  from matplotlib.colors import PowerNorm

  if trace.attention_probs is None:
    raise ValueError("this model's attention backend does not materialise probabilities")
  probs = trace.attention_probs[:, batch]  # [L, N, T, S]
  keep = np.flatnonzero(trace.valid[batch])
  layers = list(range(probs.shape[0])) if layers is None else list(layers)
  heads = list(range(probs.shape[1])) if heads is None else list(heads)
  fig, axes = _figure(len(layers), len(heads), 1.9 * len(heads) + 0.6, 1.9 * len(layers) + 0.4)
  labels = _labels(tokens, len(keep))
  for i, layer in enumerate(layers):
    for j, head in enumerate(heads):
      ax = axes[i][j]
      # A square-root colour scale: most weights of a long row are small.
      ax.imshow(probs[layer, head][np.ix_(keep, keep)], cmap="viridis",
                norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0))
      ax.set_title(f"layer {layer} head {head}", fontsize=7)
      if len(keep) <= 24:
        ax.set_xticks(range(len(keep)), labels, fontsize=5, rotation=90)
        ax.set_yticks(range(len(keep)), labels, fontsize=5)
      else:
        ax.set_xticks([])
        ax.set_yticks([])
  return fig


def layer_stats(stats: dict[str, np.ndarray]):
  """Residual RMS and update size, FFN activation RMS and sparsity, attention entropy and
  distance per head, against layer."""
  fig, axes = _figure(1, 3, 13, 3.4)
  ax = axes[0][0]
  ax.plot(range(len(stats["residual_rms"])), stats["residual_rms"], "o-", label="residual RMS")
  ax.plot(range(1, len(stats["update_ratio"]) + 1), stats["update_ratio"], "s--",
          label="block update / residual")
  ax.plot(range(1, len(stats["ffn_rms"]) + 1), stats["ffn_rms"], "^:", label="FFN hidden RMS")
  ax.set_xlabel("layer (0: embeddings)")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  for ax, key, name in ((axes[0][1], "attention_entropy", "attention entropy (nats)"),
                        (axes[0][2], "attention_distance", "mean attention distance (tokens)")):
    if key not in stats:
      ax.set_visible(False)
      continue
    values = stats[key]  # [L, N]
    for head in range(values.shape[1]):
      ax.plot(range(1, values.shape[0] + 1), values[:, head], "o", ms=3, alpha=0.7)
    ax.plot(range(1, values.shape[0] + 1), values.mean(1), "k-", lw=1.5, label="mean over heads")
    ax.set_xlabel("layer")
    ax.set_ylabel(name)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  return fig


def logit_lens(lens: Lens, batch: int = 0, tokens: Sequence[str] | None = None,
               decode=None, positions: int = 24):
  """Top-token probability per layer and position (with the token, if `decode` is given:
  id -> text), and the lens loss and KL to the output per layer."""
  fig, axes = _figure(1, 2, 13, 0.35 * lens.top_prob.shape[0] + 2.2)
  ax = axes[0][0]
  n = min(positions, lens.top_prob.shape[2])
  ax.imshow(lens.top_prob[:, batch, :n], aspect="auto", cmap="magma", vmin=0, vmax=1, origin="lower")
  if decode is not None:
    for layer in range(lens.top_prob.shape[0]):
      for t in range(n):
        text = repr(decode([int(lens.top_tokens[layer, batch, t])]))[1:-1]
        ax.text(t, layer, text[:4], ha="center", va="center", fontsize=5,
                color="white" if lens.top_prob[layer, batch, t] < 0.6 else "black")
  ax.set_xticks(range(n), _labels(tokens, n), fontsize=6, rotation=90)
  ax.set_ylabel("layer (0: embeddings)")
  ax.set_title("logit lens: top next-token probability", fontsize=8)
  ax = axes[0][1]
  layers = range(len(lens.kl_to_final))
  if lens.loss is not None:
    ax.plot(layers, lens.loss, "o-", label="next-token loss (nats)")
  ax.plot(layers, lens.kl_to_final, "s--", label="KL(output || layer)")
  ax.set_xlabel("layer")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return fig
