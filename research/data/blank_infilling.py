"""GLM's autoregressive blank infilling (Du et al. 2022, section 2.1).

Spans with lengths drawn from Poisson(3) (GLM's blocklm: the pmf over 1..39, renormalised)
are sampled until at least 15% of the text is covered, and placed at random without touching.
Part A is the text with each span replaced by one [MASK]; Part B is the spans in a random
order, each input as [START] + span and predicted as span + [END]:

    text     x1 x2 x3 x4 x5 x6           spans (x3) and (x5 x6)
    Part A   x1 x2 [M] x4 [M]            bidirectional (the prefix)
    Part B   [S] x5 x6 [S] x3            causal, sees all of Part A
    targets  x5 x6 [E] x3 [E]

2D positions (section 2.2.2): a Part A token's position is its index in Part A and its block
position 0; every token of a span in Part B has the position of that span's [MASK] and block
positions 1, 2, ... over [START] + span. Without 2D positions (a model that has none) tokens
are numbered in order over Part A then Part B.
"""

from __future__ import annotations

import math

import numpy as np

from research.data.noising import example_rng, row_texts

MASK_RATIO = 0.15
POISSON_LAMBDA = 3.0
MAX_SPAN = 39


def span_length_pmf(lam: float = POISSON_LAMBDA, max_span: int = MAX_SPAN) -> np.ndarray:
  """P(length = 1 + i) for i in 0..max_span-1: Poisson(lam) restricted to 1..max_span."""
  pmf = np.asarray([lam ** k * math.exp(-lam) / math.factorial(k)
                    for k in range(1, max_span + 1)])
  return pmf / pmf.sum()


def sample_spans(length: int, rng: np.random.Generator, mask_ratio: float = MASK_RATIO,
                 pmf: np.ndarray | None = None) -> list[tuple[int, int]]:
  """Sorted, non-touching [start, end) spans covering at least mask_ratio of `length` tokens.

  Lengths are drawn until they cover ceil(mask_ratio * length); if they cannot be placed with a
  kept token between neighbours and one kept token in all, the last ones are shortened.
  The gaps are a uniformly random composition: k sorted draws from 0..m, m the spare tokens
  (GLM's `sample_spans`).
  """
  pmf = span_length_pmf() if pmf is None else pmf
  need = math.ceil(mask_ratio * length)
  lengths: list[int] = []
  while sum(lengths) < need:
    lengths.append(int(rng.choice(len(pmf), p=pmf)) + 1)
  # Room: spans + (k - 1) separators + at least one kept token.
  while lengths and sum(lengths) + len(lengths) > length:
    lengths[-1] -= 1
    if lengths[-1] == 0:
      lengths.pop()
  if not lengths:
    return []
  lengths = list(rng.permutation(lengths))
  spare = length - sum(lengths) - (len(lengths) - 1)
  places = np.sort(rng.integers(0, spare + 1, len(lengths)))
  spans, offset = [], 0
  for i, (place, span) in enumerate(zip(places, lengths)):
    start = int(place) + i + offset
    spans.append((start, start + int(span)))
    offset += int(span)
  return spans


def infill(tokens: np.ndarray, spans: list[tuple[int, int]], rng: np.random.Generator, *,
           mask_id: int, start_id: int, end_id: int, two_d: bool = True) -> dict[str, np.ndarray]:
  """One example: input_ids, targets, loss_mask, position_ids, block_position_ids (all
  [len(tokens) + 2 * len(spans)]) and prefix_len (the length of Part A)."""
  part_a, mask_at, cursor = [], [], 0
  for start, end in spans:
    part_a.extend(tokens[cursor:start])
    mask_at.append(len(part_a))
    part_a.append(mask_id)
    cursor = end
  part_a.extend(tokens[cursor:])
  n_a = len(part_a)
  inputs, targets = list(part_a), [0] * n_a
  positions, blocks = list(range(n_a)), [0] * n_a
  for k in rng.permutation(len(spans)):
    start, end = spans[k]
    span = [int(t) for t in tokens[start:end]]
    inputs += [start_id] + span
    targets += span + [end_id]
    positions += [mask_at[k]] * (len(span) + 1)
    blocks += list(range(1, len(span) + 2))
  total = len(inputs)
  if not two_d:
    positions, blocks = list(range(total)), [0] * total
  return {
      "input_ids": np.asarray(inputs, np.int32), "targets": np.asarray(targets, np.int32),
      "loss_mask": (np.arange(total) >= n_a).astype(np.float32),
      "position_ids": np.asarray(positions, np.int32),
      "block_position_ids": np.asarray(blocks, np.int32), "prefix_len": np.int32(n_a),
  }


def infill_batch(batch: dict[str, np.ndarray], *, mask_id: int, start_id: int, end_id: int,
                 pad_id: int, seed: int, epoch: int, two_d: bool = True,
                 mask_ratio: float = MASK_RATIO) -> dict[str, np.ndarray]:
  """A data-pipeline batch (rows of up to T + 1 tokens) as blank-infilling rows of T tokens:
  input_ids, targets, loss_mask, attention_mask, position_ids, block_position_ids [b, T] and
  prefix_len [b].

  Each row's tokens are one text; a text too long for its T slots after infilling (text plus
  two tokens per span) is cut to T - 2 * spans tokens and its spans drawn again.
  """
  rows, width = batch["input_ids"].shape
  pmf = span_length_pmf()
  out = {k: np.zeros((rows, width), np.int32) for k in
         ("input_ids", "targets", "attention_mask", "position_ids", "block_position_ids")}
  out["input_ids"][:] = pad_id
  out["loss_mask"] = np.zeros((rows, width), np.float32)
  out["prefix_len"] = np.zeros((rows,), np.int32)
  for r, text in row_texts(batch):
    rng = example_rng(text, seed, epoch)
    spans = sample_spans(len(text), rng, mask_ratio, pmf)
    while len(text) + 2 * len(spans) > width:
      text = text[:width - 2 * len(spans)]
      spans = sample_spans(len(text), rng, mask_ratio, pmf)
    example = infill(text, spans, rng, mask_id=mask_id, start_id=start_id, end_id=end_id,
                     two_d=two_d)
    length = len(example["input_ids"])
    for key in ("input_ids", "targets", "position_ids", "block_position_ids", "loss_mask"):
      out[key][r, :length] = example[key]
    out["attention_mask"][r, :length] = 1
    out["prefix_len"][r] = example["prefix_len"]
  return out
