"""research.data.blank_infilling: GLM's span sampling, Part A / Part B and 2D positions."""

import math

import numpy as np
import pytest

from research.data import blank_infilling as bi

MASK, START, END = 997, 998, 999


def _reconstruct(example):
  """The text back from Part A and Part B, placing each span by its 2D position (the index of
  its [MASK] in Part A)."""
  ids, pos, block = example["input_ids"], example["position_ids"], example["block_position_ids"]
  n_a = int(example["prefix_len"])
  fills = {}
  for j in range(n_a, len(ids)):
    if block[j] == 1:
      assert ids[j] == START
      fills[int(pos[j])] = []
    else:
      fills[int(pos[j])].append(int(ids[j]))
  out = []
  for j in range(n_a):
    out.extend(fills.pop(j) if ids[j] == MASK else [int(ids[j])])
  assert not fills
  return out


def test_span_lengths_are_poisson_3_and_cover_at_least_15_percent():
  rng = np.random.default_rng(0)
  lengths, covered, total = [], 0, 0
  for _ in range(3000):
    n = int(rng.integers(60, 400))
    spans = bi.sample_spans(n, rng)
    assert all(0 <= s < e <= n for s, e in spans)
    # Sorted and never touching: at least one kept token between neighbours.
    assert all(e < s2 for (_, e), (s2, _) in zip(spans, spans[1:]))
    masked = sum(e - s for s, e in spans)
    assert masked >= math.ceil(0.15 * n)
    lengths += [e - s for s, e in spans]
    covered += masked
    total += n
  # Poisson(3) given X >= 1: mean mu = 3 / (1 - e^-3) = 3.157, variance mu (1 + 3 - mu) = 2.66.
  mu = 3 / (1 - math.exp(-3))
  assert np.mean(lengths) == pytest.approx(mu, abs=0.05)
  assert np.var(lengths) == pytest.approx(mu * (4 - mu), abs=0.15)
  assert 0.15 <= covered / total <= 0.175  # "until at least 15%": the last span overshoots


def test_2d_positions_follow_the_paper():
  """Du et al. (2022), Figure 2: x1..x6 with spans [x3] and [x5, x6]."""
  tokens = np.array([11, 12, 13, 14, 15, 16])
  example = bi.infill(tokens, [(2, 3), (4, 6)], np.random.default_rng(0), mask_id=MASK,
                      start_id=START, end_id=END)
  assert example["prefix_len"] == 5
  np.testing.assert_array_equal(example["input_ids"][:5], [11, 12, MASK, 14, MASK])
  np.testing.assert_array_equal(example["position_ids"][:5], np.arange(5))
  np.testing.assert_array_equal(example["block_position_ids"][:5], 0)
  part_b = {int(example["input_ids"][j + 1]): j for j in range(5, 10)
            if example["input_ids"][j] == START}
  x5, x3 = part_b[15], part_b[13]
  # [S] x5 x6 at the position of its [MASK] (4), block positions 1, 2, 3; targets x5 x6 [E].
  np.testing.assert_array_equal(example["input_ids"][x5:x5 + 3], [START, 15, 16])
  np.testing.assert_array_equal(example["position_ids"][x5:x5 + 3], [4, 4, 4])
  np.testing.assert_array_equal(example["block_position_ids"][x5:x5 + 3], [1, 2, 3])
  np.testing.assert_array_equal(example["targets"][x5:x5 + 3], [15, 16, END])
  np.testing.assert_array_equal(example["position_ids"][x3:x3 + 2], [2, 2])
  np.testing.assert_array_equal(example["block_position_ids"][x3:x3 + 2], [1, 2])
  np.testing.assert_array_equal(example["targets"][x3:x3 + 2], [13, END])
  np.testing.assert_array_equal(example["loss_mask"], [0] * 5 + [1] * 5)
  assert _reconstruct(example) == tokens.tolist()


def test_span_order_in_part_b_is_shuffled():
  tokens = np.arange(100, 160)
  spans = [(2, 4), (10, 12), (20, 22), (30, 32), (40, 42)]
  orders = set()
  for seed in range(20):
    example = bi.infill(tokens, spans, np.random.default_rng(seed), mask_id=MASK,
                        start_id=START, end_id=END)
    starts = example["block_position_ids"] == 1
    orders.add(tuple(example["position_ids"][starts]))
  assert len(orders) > 5


def _pipeline_batch(rows, width, rng):
  tokens = rng.integers(3, 500, (rows, width + 1)).astype(np.int32)
  segments = np.ones((rows, width), np.int32)
  segments[-1, 30:] = 0  # an unpacked, padded document
  return {"input_ids": np.where(segments > 0, tokens[:, :-1], 0), "targets": tokens[:, 1:],
          "loss_mask": segments.astype(np.float32), "segment_ids": segments}


def _infill(batch, epoch=0, two_d=True):
  return bi.infill_batch(batch, mask_id=MASK, start_id=START, end_id=END, pad_id=0, seed=0,
                         epoch=epoch, two_d=two_d)


def test_batches_fit_their_rows_and_reconstruct_the_text():
  rng = np.random.default_rng(1)
  batch = _pipeline_batch(6, 80, rng)
  out = _infill(batch)
  assert out["input_ids"].shape == (6, 80) and out["prefix_len"].shape == (6,)
  for r in range(6):
    n = int(out["attention_mask"][r].sum())
    example = {k: out[k][r, :n] for k in ("input_ids", "position_ids", "block_position_ids")}
    example["prefix_len"] = out["prefix_len"][r]
    text = _reconstruct(example)
    row = batch["input_ids"][r, :int(batch["segment_ids"][r].sum())].tolist()
    row.append(int(batch["targets"][r, len(row) - 1]))
    assert text == row[:len(text)]  # a full row is cut to leave room for the spans
    spans = int(np.sum(out["block_position_ids"][r] == 1))
    assert len(text) + 2 * spans == n
    # Loss exactly on Part B (the span tokens and each span's [END]).
    np.testing.assert_array_equal(out["loss_mask"][r, :n], np.arange(n) >= out["prefix_len"][r])
  assert out["attention_mask"][-1].sum() < 40  # the short document stays short


def test_batches_are_deterministic_and_fresh_per_epoch_and_1d_without_block_positions():
  rng = np.random.default_rng(2)
  batch = _pipeline_batch(4, 80, rng)
  first = _infill(batch)
  np.testing.assert_array_equal(_infill(batch)["input_ids"], first["input_ids"])
  assert not np.array_equal(_infill(batch, epoch=1)["input_ids"], first["input_ids"])
  flat = _infill(batch, two_d=False)
  np.testing.assert_array_equal(flat["input_ids"], first["input_ids"])
  n = int(flat["attention_mask"][0].sum())
  np.testing.assert_array_equal(flat["position_ids"][0, :n], np.arange(n))
  assert not flat["block_position_ids"].any()
