"""research.data.batching: packed/padded rows, masks, shuffling, resume, per-host shares."""

from __future__ import annotations

import json

import numpy as np
import pytest

from research.data.batching import Layout, TrainIterator, eval_batches
from research.data.documents import TokenizedSplit

PAD = 0


def split_of(docs: list[list[int]], answer_from: list[int] | None = None) -> TokenizedSplit:
  """Documents of distinct tokens; document d's answer starts at answer_from[d]."""
  starts = np.cumsum([0] + [len(d) for d in docs])
  answer = np.zeros(starts[-1], bool)
  for d, first in enumerate(answer_from or []):
    answer[starts[d] + first:starts[d + 1]] = True
  return TokenizedSplit(np.concatenate(docs).astype(np.int32), starts.astype(np.int64), answer)


def stream_split(num_docs=40, seed=0) -> TokenizedSplit:
  """Documents of 3..12 tokens; every token value (1 + its stream position) is unique."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, 13, num_docs)
  tokens = np.arange(1, lengths.sum() + 1)
  docs = np.split(tokens, np.cumsum(lengths)[:-1])
  return split_of([d.tolist() for d in docs], answer_from=[len(d) // 2 for d in docs])


def test_packed_row_shifts_segments_and_masks():
  split = split_of([[11, 12, 13], [21, 22], [31, 32, 33, 34]], answer_from=[2, 1, 3])
  layout = Layout(seq_len=6, pack=True, answer_only=False, pad_id=PAD)
  b = layout.gather(split, np.array([1]), np.array([7]))
  np.testing.assert_array_equal(b["input_ids"], [[12, 13, 21, 22, 31, 32]])
  np.testing.assert_array_equal(b["targets"], [[13, 21, 22, 31, 32, 33]])
  np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 2, 2, 3, 3]])
  # No loss where the target starts another document.
  np.testing.assert_array_equal(b["loss_mask"], [[1, 0, 1, 0, 1, 1]])
  answers = Layout(6, True, True, PAD).gather(split, np.array([1]), np.array([7]))
  # Answer targets only: 13 (answer of doc 0), 22 (doc 1); 32, 33 are prompt of doc 2.
  np.testing.assert_array_equal(answers["loss_mask"], [[1, 0, 1, 0, 0, 0]])
  assert {k: (v.dtype, v.shape) for k, v in b.items()} == {
      "input_ids": (np.int32, (1, 6)), "targets": (np.int32, (1, 6)),
      "loss_mask": (np.float32, (1, 6)), "segment_ids": (np.int32, (1, 6))}


def test_padded_rows_hold_one_document_each():
  split = split_of([[11, 12, 13], [21, 22], [31, 32, 33, 34]], answer_from=[1, 1, 1])
  layout = Layout(seq_len=5, pack=False, answer_only=True, pad_id=PAD)
  starts, lengths = layout.eval_rows(split)
  b = layout.gather(split, starts, lengths)
  np.testing.assert_array_equal(b["input_ids"], [[11, 12, 0, 0, 0], [21, 0, 0, 0, 0],
                                                 [31, 32, 33, 0, 0]])
  np.testing.assert_array_equal(b["targets"], [[12, 13, 0, 0, 0], [22, 0, 0, 0, 0],
                                               [32, 33, 34, 0, 0]])
  np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0],
                                                   [1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(b["loss_mask"], [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0],
                                                 [1, 1, 1, 0, 0]])


def test_an_epoch_uses_every_token_as_input_at_most_once():
  split = stream_split()
  layout = Layout(seq_len=8, pack=True, answer_only=False, pad_id=PAD)
  for epoch in range(3):
    starts, lengths = layout.train_rows(split, seed=1, epoch=epoch)
    b = layout.gather(split, starts, lengths)
    inputs = b["input_ids"].ravel()
    assert len(np.unique(inputs)) == inputs.size  # tokens are unique, so no repeats
    # Consecutive windows: all but fewer than 2 seq_len tokens are covered.
    assert split.num_tokens - inputs.size < 2 * layout.seq_len
    np.testing.assert_array_equal(b["targets"][:, :-1], b["input_ids"][:, 1:])
  first = layout.train_rows(split, seed=1, epoch=0)[0]
  assert not np.array_equal(first, layout.train_rows(split, seed=1, epoch=1)[0])
  np.testing.assert_array_equal(first, layout.train_rows(split, seed=1, epoch=0)[0])


def test_eval_batches_cover_every_token_once_and_pad_the_last_batch():
  split = stream_split(num_docs=23)
  layout = Layout(seq_len=8, pack=True, answer_only=False, pad_id=PAD)
  batches = list(eval_batches(split, layout, batch_size=4))
  inputs = np.concatenate([b["input_ids"][b["segment_ids"] > 0] for b in batches])
  # Every token but the last is an input exactly once, in order.
  np.testing.assert_array_equal(inputs, split.tokens[:-1])
  targets = np.concatenate([b["targets"][b["segment_ids"] > 0] for b in batches])
  np.testing.assert_array_equal(targets, split.tokens[1:])
  assert all(b["input_ids"].shape == (4, 8) for b in batches)
  assert batches[-1]["loss_mask"][-1].sum() == 0  # padding rows carry no loss
  assert len(list(eval_batches(split, layout, batch_size=4, max_batches=2))) == 2


def collect(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("pack", [True, False])
def test_resume_from_json_state_across_epoch_boundaries(pack):
  split = stream_split()
  layout = Layout(seq_len=8, pack=pack, answer_only=False, pad_id=PAD)
  make = lambda **kw: TrainIterator(split, layout, batch_size=4, seed=3, tag="t", **kw)
  steps = len(layout.train_rows(split, 3, 0)[0]) // 4
  reference = collect(make(), 3 * steps)
  it = make()
  collect(it, steps - 1)
  state = json.loads(json.dumps(it.state()))
  assert state["epoch"] == 0
  # The resumed iterator crosses into epochs 1 and 2 exactly as the original did.
  assert_batches_equal(collect(make(state=state), 2 * steps + 1), reference[steps - 1:])
  assert_batches_equal(collect(it, 2 * steps + 1), reference[steps - 1:])
  assert it.state()["epoch"] == 2
  with pytest.raises(ValueError, match="other data or ordering"):
    make(state={**state, "data": "other"})


def test_hosts_split_the_global_batch():
  split = stream_split()
  layout = Layout(seq_len=8, pack=True, answer_only=False, pad_id=PAD)
  one = collect(TrainIterator(split, layout, batch_size=8, seed=0, tag="t"), 5)
  hosts = [collect(TrainIterator(split, layout, batch_size=8, seed=0, tag="t",
                                 process_index=p, process_count=4), 5) for p in range(4)]
  for step, global_batch in enumerate(one):
    for key, value in global_batch.items():
      assert hosts[0][step][key].shape[0] == 2
      np.testing.assert_array_equal(np.concatenate([h[step][key] for h in hosts]), value)
  evals = [list(eval_batches(split, layout, batch_size=8, process_index=p, process_count=2))
           for p in range(2)]
  for both, whole in zip(zip(*evals), eval_batches(split, layout, batch_size=8)):
    np.testing.assert_array_equal(np.concatenate([b["targets"] for b in both]), whole["targets"])
  with pytest.raises(ValueError, match="batch_size=8 must be divisible by the process count 3"):
    TrainIterator(split, layout, batch_size=8, seed=0, tag="t", process_count=3)


def test_resume_with_another_batch_size_continues_at_the_same_row():
  split = stream_split()
  layout = Layout(seq_len=8, pack=True, answer_only=False, pad_id=PAD)
  big = TrainIterator(split, layout, batch_size=4, seed=0, tag="t")
  next(big)
  small = TrainIterator(split, layout, batch_size=2, seed=0, tag="t", state=big.state())
  following = next(big)
  halves = collect(small, 2)
  np.testing.assert_array_equal(
      np.concatenate([h["input_ids"] for h in halves]), following["input_ids"])
