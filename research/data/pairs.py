"""Sentence-pair rows for NSP (Devlin et al. 2019) and SOP (Lan et al. 2020) pretraining.

The documents of a split are the sentences (a text file read with `split_lines`: its lines;
a synthetic task: its examples). Each row is anchored at one sentence s and built, with a
random generator seeded by (data seed, epoch, s), as BERT's create_pretraining_data builds
an instance:

- a chunk of consecutive sentences s, s+1, ... is gathered until it fills the row (at least
  two), and split at a random sentence boundary into A and B;
- "nsp": in half the rows B is replaced by text starting at a random sentence outside the
  chunk, label 1 ("not next"; 0 is "B follows A", transformers' next_sentence_label);
- "sop": in half the rows A and B are swapped, label 1 (0 is the original order,
  transformers' sentence_order_label);
- the pair is truncated to seq_len - 3 tokens, taking tokens from the longer side: from the
  front of the first segment and the end of the second (in text order, before SOP's swap),
  so the junction the label is about stays intact;
- the row is [CLS] A [SEP] B [SEP], token types 0 up to the first [SEP] and 1 after it.

Everything depends on the anchor, the seed and the epoch only, so a row is the same whichever
host builds it and a resumed run rebuilds exactly the rows it would have seen; every epoch
draws new pairs. Batches carry input_ids, token_type_ids, segment_ids (1 real, 0 padding)
and pair_label; the masked-LM `prepare` adds the MLM targets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.data.documents import TokenizedSplit

MODES = ("nsp", "sop")
# A stream of its own, so no other randomness of the data seed coincides with it.
_STREAM = 0x5E17


@dataclasses.dataclass(frozen=True)
class PairSpec:
  mode: str  # "nsp" or "sop"
  cls_id: int
  sep_id: int
  pad_id: int
  seed: int
  # Framing tokens around each document's sentence in the stream (BOS before, EOS/SEP after).
  lead: int = 0
  trail: int = 1

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"PairSpec.mode={self.mode!r}; choose one of {MODES}")


def _sentence(split: TokenizedSplit, i: int, spec: PairSpec) -> np.ndarray:
  lo, hi = int(split.doc_starts[i]) + spec.lead, int(split.doc_starts[i + 1]) - spec.trail
  return np.asarray(split.tokens[lo:max(lo, hi)])


def _gather(split: TokenizedSplit, first: int, budget: int, spec: PairSpec,
            at_least: int = 1) -> list[np.ndarray]:
  """Sentences first, first + 1, ... until they hold `budget` tokens (and `at_least` of them)."""
  out, total, i = [], 0, first
  while i < split.num_docs and (total < budget or len(out) < at_least):
    out.append(_sentence(split, i, spec))
    total += len(out[-1])
    i += 1
  return out


def _truncate(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
  """Removes tokens from the longer side (ties: B) until len(a) + len(b) <= budget."""
  la, lb = len(a), len(b)
  excess = la + lb - budget
  if excess > 0:
    cut_a = min(excess, max(la - lb, 0))
    la, excess = la - cut_a, excess - cut_a
    cut_b = min(excess, max(lb - la, 0))
    lb, excess = lb - cut_b, excess - cut_b
    if excess > 0:  # now equal: alternately B then A
      lb, la = lb - (excess + 1) // 2, la - excess // 2
  return a[len(a) - la:], b[:lb]


def make_pair(split: TokenizedSplit, anchor: int, seq_len: int, spec: PairSpec,
              epoch: int) -> tuple[np.ndarray, np.ndarray, int]:
  """(A, B, label) of the row anchored at sentence `anchor`."""
  rng = np.random.default_rng([spec.seed, epoch, anchor, _STREAM])
  budget = seq_len - 3
  n = split.num_docs
  start = min(anchor, max(n - 2, 0))  # the last sentence anchors the pair it ends
  chunk = _gather(split, start, budget, spec, at_least=2)
  if len(chunk) < 2:  # a one-sentence split: split the sentence itself
    whole = chunk[0] if chunk else np.zeros(0, np.int32)
    half = len(whole) // 2
    chunk = [whole[:half], whole[half:]]
  cut = int(rng.integers(1, len(chunk)))
  a, b = np.concatenate(chunk[:cut]), np.concatenate(chunk[cut:])
  label = 0
  if spec.mode == "nsp" and rng.random() < 0.5 and n > len(chunk):
    # A random sentence outside the chunk (so never the true continuation) starts B.
    r = int(rng.integers(0, n - len(chunk)))
    r = r + len(chunk) if r >= start else r
    b = np.concatenate(_gather(split, r, budget - len(a), spec))
    label = 1
  # Truncated in text order, so the junction stays whole even when SOP swaps the two.
  a, b = _truncate(a, b, budget)
  if spec.mode == "sop" and rng.random() < 0.5:
    a, b = b, a
    label = 1
  return a, b, label


def gather(split: TokenizedSplit, anchors: np.ndarray, lengths: np.ndarray, seq_len: int,
           spec: PairSpec, epoch: int) -> dict[str, np.ndarray]:
  """The batch of rows anchored at `anchors`; a row of length 0 is all padding."""
  rows = len(anchors)
  ids = np.full((rows, seq_len), spec.pad_id, np.int32)
  types = np.zeros((rows, seq_len), np.int32)
  segments = np.zeros((rows, seq_len), np.int32)
  labels = np.zeros(rows, np.int32)
  for r, (anchor, length) in enumerate(zip(np.asarray(anchors), np.asarray(lengths))):
    if length == 0 or split.num_docs == 0:
      continue
    a, b, labels[r] = make_pair(split, int(anchor), seq_len, spec, epoch)
    row = np.concatenate([[spec.cls_id], a, [spec.sep_id], b, [spec.sep_id]])
    ids[r, :len(row)] = row
    types[r, len(a) + 2:len(row)] = 1
    segments[r, :len(row)] = 1
  return {"input_ids": ids, "token_type_ids": types, "segment_ids": segments,
          "pair_label": labels}
