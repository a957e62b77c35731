"""research.data.span_corruption: T5's noise mask, sentinels and batch transform."""

import numpy as np
import pytest

from research.data import noising
from research.data import span_corruption as sc

SENTINELS = np.arange(999, 899, -1, dtype=np.int32)  # <extra_id_k> = 999 - k


def _reconstruct(inputs, targets, sentinels=SENTINELS):
  """Each sentinel of the inputs replaced by what follows the same sentinel in the targets."""
  is_sentinel = np.isin(targets, sentinels)
  fills, current = {}, None
  for token, sentinel in zip(targets, is_sentinel):
    if sentinel:
      current = int(token)
      fills[current] = []
    else:
      fills[current].append(int(token))
  out = []
  for token in inputs:
    out.extend(fills[int(token)] if token in fills else [int(token)])
  return out


def test_counts_and_lengths_are_t5s():
  # t5.data.preprocessors.random_spans_helper: 568 raw tokens make T5's 512 inputs, 114 targets.
  assert sc.noise_counts(568) == (85, 28)
  assert sc.corrupted_lengths(568) == (512, 114)
  # float32 arithmetic as TF: 190 * 0.15 is 28.500002 there, so 29 noise tokens, not
  # round(28.5) = 28 as float64 would give.
  assert sc.noise_counts(190) == (29, 10)
  # At least one noise token and one span, at least one kept token.
  assert sc.noise_counts(2) == (1, 1) and sc.noise_counts(3)[0] == 1


def test_noise_fraction_and_mean_span_length_over_a_large_sample():
  rng = np.random.default_rng(0)
  noise_total = tokens_total = 0
  span_lengths = []
  for _ in range(2000):
    n = int(rng.integers(40, 600))
    mask = sc.random_spans_noise_mask(n, rng)
    assert not mask[0]  # non-noise comes first
    starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
    ends = np.flatnonzero(mask & ~np.concatenate([mask[1:], [False]])) + 1
    assert (mask.sum(), len(starts)) == sc.noise_counts(n)
    span_lengths.extend(ends - starts)
    noise_total += mask.sum()
    tokens_total += n
  span_lengths = np.asarray(span_lengths)
  assert noise_total / tokens_total == pytest.approx(0.15, abs=0.002)
  assert span_lengths.mean() == pytest.approx(3.0, abs=0.05)
  # A random partition, not equal spans: lengths spread, geometric-like.
  assert span_lengths.min() == 1 and span_lengths.max() >= 10 and span_lengths.std() > 1.5


def test_inputs_and_targets_reconstruct_the_original():
  rng = np.random.default_rng(1)
  for _ in range(200):
    n = int(rng.integers(2, 300))
    tokens = rng.integers(3, 500, n).astype(np.int32)
    mask = sc.random_spans_noise_mask(n, rng)
    inputs, targets = sc.corrupt(tokens, mask, SENTINELS)
    assert _reconstruct(inputs, targets) == tokens.tolist()
    spans = sc.noise_counts(n)[1] if n >= 2 else 0
    assert [t for t in inputs if t in SENTINELS] == SENTINELS[:spans].tolist()
    assert (len(inputs) + 1, len(targets) + 1) == sc.corrupted_lengths(n)


def _pipeline_batch(rows, width, rng, short_row=None):
  tokens = rng.integers(3, 500, (rows, width + 1)).astype(np.int32)
  segments = np.ones((rows, width), np.int32)
  if short_row is not None:  # an unpacked document of 20 tokens, padded
    segments[short_row, 19:] = 0
  return {"input_ids": np.where(segments > 0, tokens[:, :-1], 0), "targets": tokens[:, 1:],
          "loss_mask": segments.astype(np.float32), "segment_ids": segments}


def _corrupt(batch, epoch=0, seed=0):
  return sc.corrupt_batch(batch, sentinels=SENTINELS, eos_id=2, pad_id=0, decoder_start_id=0,
                          seed=seed, epoch=epoch)


def test_batches_are_seq2seq_rows_that_reconstruct_each_row():
  rng = np.random.default_rng(2)
  batch = _pipeline_batch(4, 64, rng, short_row=3)
  out = _corrupt(batch)
  enc_len, dec_len = sc.corrupted_lengths(65)
  assert out["input_ids"].shape == (4, enc_len) and out["targets"].shape == (4, dec_len)
  for r in range(4):
    n = int(out["attention_mask"][r].sum())
    m = int(out["decoder_attention_mask"][r].sum())
    inputs, targets = out["input_ids"][r, :n], out["targets"][r, :m]
    assert inputs[-1] == 2 and targets[-1] == 2  # both end with EOS
    original = batch["input_ids"][r, :int(batch["segment_ids"][r].sum())].tolist()
    original.append(int(batch["targets"][r, len(original) - 1]))
    assert _reconstruct(inputs[:-1], targets[:-1]) == original
    # Teacher forcing: the decoder reads the start token, then the targets shifted right.
    assert out["decoder_input_ids"][r, 0] == 0
    np.testing.assert_array_equal(out["decoder_input_ids"][r, 1:m], targets[:-1])
  np.testing.assert_array_equal(out["loss_mask"], out["decoder_attention_mask"])
  assert out["attention_mask"][:3].sum(axis=1).tolist() == [enc_len] * 3  # full rows fill S


def test_batches_are_deterministic_per_example_and_fresh_per_epoch():
  rng = np.random.default_rng(3)
  batch = _pipeline_batch(4, 64, rng)
  first = _corrupt(batch)
  for key, value in _corrupt(batch).items():
    np.testing.assert_array_equal(value, first[key])
  # Rows corrupt the same on their own (another host split or batch order).
  half = _corrupt({k: v[2:] for k, v in batch.items()})
  np.testing.assert_array_equal(half["input_ids"], first["input_ids"][2:])
  assert not np.array_equal(_corrupt(batch, epoch=1)["input_ids"], first["input_ids"])
  assert not np.array_equal(_corrupt(batch, seed=1)["input_ids"], first["input_ids"])


class _Tokenizer:
  def __init__(self, vocab_size, specials):
    self.vocab_size, self._specials = vocab_size, specials

  def special_tokens(self):
    return self._specials


def test_sentinels_come_from_the_tokenizer_or_the_free_top_of_the_vocabulary():
  t5_like = _Tokenizer(32100, {f"<extra_id_{k}>": 32099 - k for k in range(100)})
  wanted = [(f"<extra_id_{k}>",) for k in range(3)]
  assert noising.added_token_ids(t5_like, 32128, wanted, "x") == [32099, 32098, 32097]
  char = _Tokenizer(68, {"<pad>": 0, "<s>": 1, "</s>": 2})
  assert noising.added_token_ids(char, 256, wanted, "x") == [255, 254, 253]
  with pytest.raises(ValueError, match="set model.vocab_size>=71"):
    noising.added_token_ids(char, 70, wanted, "sentinels")
