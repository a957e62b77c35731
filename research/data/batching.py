"""Batches from token streams: packing or padding, shuffling, resumable iteration.

A batch is a dict of numpy arrays holding this host's rows of the global batch:
- `input_ids` int32[b, T] and `targets` int32[b, T], the next tokens;
- `loss_mask` float32[b, T]: 1 where the target counts: it is no padding, lies in the
  input's document, and (loss_on="answer") is an answer token;
- `segment_ids` int32[b, T]: 1, 2, ... for the documents of the row in order, 0 for padding
  (the model's convention: attention stays inside a segment, positions restart in each);
  with `cross_document` every real token is segment 1, so attention spans the row.

A row is a span of at most T + 1 tokens of a split's stream, so inputs and targets are the
same tokens shifted by one. Packed rows are consecutive windows of the stream
(`start = offset + i T`, each epoch a random offset in [0, T) and a random order), so within
an epoch no token is an input twice; the partial window at the end is dropped in training
and padded in evaluation. Unpacked rows are whole documents, padded. A target in another
document than its input (the first token after an EOS) carries no loss: attention cannot
see across documents, so it is not predictable. Sentence-pair rows (`Layout.pairs`, encoder
pretraining) are anchored at documents and built by research.data.pairs instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from research.data import pairs as pairs_lib
from research.data.documents import TokenizedSplit

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a split's stream becomes rows of seq_len + 1 tokens."""

  seq_len: int
  pack: bool
  answer_only: bool
  pad_id: int
  # Sentence-pair rows: `starts` are anchor documents (research.data.pairs).
  pairs: pairs_lib.PairSpec | None = None
  cross_document: bool = False

  def gather(self, split: TokenizedSplit, starts: np.ndarray, lengths: np.ndarray,
             epoch: int = 0) -> Batch:
    """The batch of rows `split.tokens[start:start + length]` (length <= seq_len + 1)."""
    if self.pairs is not None:
      return pairs_lib.gather(split, starts, lengths, self.seq_len, self.pairs, epoch)
    span = np.arange(self.seq_len + 1)
    valid = span[None, :] < np.asarray(lengths)[:, None]
    index = np.where(valid, np.asarray(starts)[:, None] + span, 0)
    if split.num_tokens == 0:  # only all-padding rows can come from an empty split
      tokens = np.full(index.shape, self.pad_id, np.int32)
      docs = np.full(index.shape, -1, np.int32)
    else:
      tokens = np.where(valid, split.tokens[index], self.pad_id).astype(np.int32)
      docs = np.where(valid, split.doc_ids[index], -1)
    # A position is real when it has a target; the row's last token is only a target.
    real = valid[:, 1:]
    loss = real & (docs[:, 1:] == docs[:, :-1])
    if self.answer_only and split.num_tokens:
      loss &= split.answer[index[:, 1:]]
    # Documents are contiguous in the stream, so subtracting the row's first one numbers
    # them 1, 2, ... in order.
    segments = np.where(real, 1 if self.cross_document else docs[:, :-1] - docs[:, :1] + 1, 0)
    return {
        "input_ids": np.where(real, tokens[:, :-1], self.pad_id).astype(np.int32),
        "targets": tokens[:, 1:],
        "loss_mask": loss.astype(np.float32),
        "segment_ids": segments.astype(np.int32),
    }

  def train_rows(self, split: TokenizedSplit, seed: int,
                 epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the epoch's training rows, in the epoch's shuffled order."""
    rng = np.random.default_rng([seed, epoch])
    if self.pairs is not None:
      starts, lengths = np.arange(split.num_docs), split.doc_lengths
    elif self.pack:
      offset = int(rng.integers(0, self.seq_len))
      count = max(0, (split.num_tokens - offset - 1) // self.seq_len)
      starts = offset + self.seq_len * np.arange(count, dtype=np.int64)
      lengths = np.full(count, self.seq_len + 1, np.int64)
    else:
      starts, lengths = split.doc_starts[:-1], split.doc_lengths
    order = rng.permutation(len(starts))
    return np.asarray(starts)[order], np.asarray(lengths)[order]

  def min_train_rows(self, split: TokenizedSplit) -> int:
    """The fewest training rows any epoch has (the largest offset leaves the fewest)."""
    if self.pack and self.pairs is None:
      return max(0, (split.num_tokens - self.seq_len) // self.seq_len)
    return split.num_docs

  def eval_rows(self, split: TokenizedSplit) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) covering every validation token once, in stream order."""
    if self.pairs is not None:
      return np.arange(split.num_docs), np.asarray(split.doc_lengths)
    if self.pack:
      starts = np.arange(0, max(split.num_tokens - 1, 0), self.seq_len, dtype=np.int64)
      return starts, np.minimum(self.seq_len + 1, split.num_tokens - starts)
    return np.asarray(split.doc_starts[:-1]), np.asarray(split.doc_lengths)


def local_rows(batch_size: int, process_index: int, process_count: int) -> tuple[int, int]:
  """(first row, number of rows) of this process's share of a global batch."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in [0, {process_count})")
  if batch_size % process_count:
    raise ValueError(
        f"DataConfig.batch_size={batch_size} must be divisible by the process count "
        f"{process_count} (each process loads batch_size // process_count rows)")
  rows = batch_size // process_count
  return process_index * rows, rows


class TrainIterator:
  """Endless training batches, epoch after epoch; `state()` resumes it exactly.

  The position is (epoch, row): the number of the epoch's shuffled rows already consumed.
  An epoch ends when fewer rows than a global batch remain. A state resumes with another
  batch size or process count too: the next batch starts at the same row.
  """

  def __init__(self, split: TokenizedSplit, layout: Layout, *, batch_size: int, seed: int,
               tag: str, state: dict[str, Any] | None = None, process_index: int = 0,
               process_count: int = 1):
    self._split = split
    self._layout = layout
    self._batch_size = batch_size
    self._seed = seed
    self._tag = tag
    self._first, self._rows = local_rows(batch_size, process_index, process_count)
    self._epoch, self._row = 0, 0
    if state is not None:
      if state.get("data") != tag:
        raise ValueError(
            f"iterator state is for other data or ordering (data={state.get('data')!r}); "
            f"this dataset's is {tag!r}: the source, tokenizer, seq_len, pack and seed must "
            "match the run that saved it")
      self._epoch, self._row = int(state["epoch"]), int(state["row"])
    self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

  def _epoch_rows(self) -> tuple[np.ndarray, np.ndarray]:
    if self._cached is None or self._cached[0] != self._epoch:
      starts, lengths = self._layout.train_rows(self._split, self._seed, self._epoch)
      if len(starts) < self._batch_size:
        raise ValueError(
            f"epoch {self._epoch} has {len(starts)} training rows, fewer than "
            f"batch_size={self._batch_size}")
      self._cached = (self._epoch, starts, lengths)
    return self._cached[1], self._cached[2]

  @property
  def epoch(self) -> int:
    """The epoch the next batch comes from (once the current one is exhausted, the next)."""
    starts, _ = self._epoch_rows()
    return self._epoch + (self._row + self._batch_size > len(starts))

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    starts, lengths = self._epoch_rows()
    if self._row + self._batch_size > len(starts):
      self._epoch, self._row = self._epoch + 1, 0
      starts, lengths = self._epoch_rows()
    lo = self._row + self._first
    batch = self._layout.gather(
        self._split, starts[lo:lo + self._rows], lengths[lo:lo + self._rows], self._epoch)
    self._row += self._batch_size
    return batch

  def state(self) -> dict[str, Any]:
    """JSON-serialisable position; pass it to `Dataset.train_iterator(state=...)`."""
    return {"epoch": self._epoch, "row": self._row, "data": self._tag}


def eval_batches(split: TokenizedSplit, layout: Layout, *, batch_size: int,
                 max_batches: int | None = None, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Every validation row once, in order, in global batches of `batch_size` rows (the last
  one filled with all-padding rows, loss_mask 0), this process's rows of each."""
  first, rows = local_rows(batch_size, process_index, process_count)
  starts, lengths = layout.eval_rows(split)
  count = math.ceil(len(starts) / batch_size)
  if max_batches is not None:
    count = min(count, max_batches)
  for i in range(count):
    s = starts[i * batch_size:(i + 1) * batch_size]
    n = lengths[i * batch_size:(i + 1) * batch_size]
    pad = batch_size - len(s)
    s, n = np.pad(s, (0, pad)), np.pad(n, (0, pad))
    yield layout.gather(split, s[first:first + rows], n[first:first + rows])
