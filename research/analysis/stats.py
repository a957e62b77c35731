"""Per-layer statistics of a `Trace`, averaged over real (non-padding) tokens.

    s = layer_stats(trace)
    s["residual_rms"]       [L+1]  RMS of the residual stream: embeddings, then each block
    s["update_ratio"]       [L]    ||x_l - x_{l-1}|| / ||x_{l-1}||: how much each block writes
    s["ffn_rms"]            [L]    RMS of the FFN hidden activation (NaN for MoE layers)
    s["ffn_zero_fraction"]  [L]    fraction of exactly-zero hidden units (ReLU sparsity)
    s["attention_entropy"]  [L, N] mean entropy of each head's attention, in nats
    s["attention_distance"] [L, N] mean distance (query index - key index) each head attends over

Attention entropy is log(visible keys) for a uniform head and 0 for one that looks at a
single token. The distance is the attention-weighted mean of i - j, the "mean attention
distance" of Dosovitskiy et al. (2021, appendix D.7) for a causal sequence.
"""

from __future__ import annotations

import numpy as np

from research.analysis.capture import Trace


def _mean_over_tokens(values_BT: np.ndarray, valid_BT: np.ndarray) -> float:
  w = valid_BT.astype(np.float64)
  return float((values_BT * w).sum() / max(w.sum(), 1.0))


def _rms(x_BTD: np.ndarray) -> np.ndarray:
  return np.sqrt(np.mean(np.square(x_BTD.astype(np.float64)), axis=-1))


def attention_entropy(probs_LBNTS: np.ndarray, valid_BT: np.ndarray) -> np.ndarray:
  """[L, N]: -sum_s p log p per query, averaged over real queries."""
  p = probs_LBNTS.astype(np.float64)
  h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)  # [L, B, N, T]
  w = valid_BT[None, :, None, :].astype(np.float64)
  return (h * w).sum(axis=(1, 3)) / max(valid_BT.sum(), 1)


def attention_distance(probs_LBNTS: np.ndarray, valid_BT: np.ndarray) -> np.ndarray:
  """[L, N]: sum_s p(t, s) (t - s) per query, averaged over real queries."""
  t, s = probs_LBNTS.shape[-2:]
  # Queries are the last t of the s keys (s > t when the keys include a cache).
  dist_TS = (np.arange(t)[:, None] + (s - t)) - np.arange(s)[None, :]
  d = (probs_LBNTS.astype(np.float64) * dist_TS).sum(-1)  # [L, B, N, T]
  w = valid_BT[None, :, None, :].astype(np.float64)
  return (d * w).sum(axis=(1, 3)) / max(valid_BT.sum(), 1)


def layer_stats(trace: Trace) -> dict[str, np.ndarray]:
  valid = trace.valid
  stream = trace.stream
  rms = np.array([_mean_over_tokens(_rms(x), valid) for x in stream])
  norms = np.linalg.norm(stream.astype(np.float64), axis=-1)  # [L+1, B, T]
  delta = np.linalg.norm(np.diff(stream.astype(np.float64), axis=0), axis=-1)
  update = np.array([_mean_over_tokens(delta[i] / np.maximum(norms[i], 1e-12), valid)
                     for i in range(trace.n_layers)])
  ffn_rms = np.array([np.nan if h is None else _mean_over_tokens(_rms(h), valid)
                      for h in trace.ffn_hidden])
  zeros = np.array([np.nan if h is None else _mean_over_tokens((h == 0).mean(-1), valid)
                    for h in trace.ffn_hidden])
  out = {"residual_rms": rms, "update_ratio": update, "ffn_rms": ffn_rms, "ffn_zero_fraction": zeros}
  if trace.attention_probs is not None:
    out["attention_entropy"] = attention_entropy(trace.attention_probs, valid)
    out["attention_distance"] = attention_distance(trace.attention_probs, valid)
  return out
