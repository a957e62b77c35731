"""T5's span corruption (Raffel et al. 2020, section 3.1.4), as t5.data.preprocessors does it.

Of an example of n tokens, round(n * noise_density) are noise, in round(noise / mean span
length) spans (at least one of each; float32 arithmetic, rounding half to even, as TF). The
noise and non-noise token counts are each cut into that many non-empty spans by a random
partition, interleaved non-noise first (`random_spans_noise_mask`). Each noise span becomes one
sentinel in the inputs; the targets are the sentinels each followed by the span it replaced
(`noise_span_to_unique_sentinel` / `nonnoise_span_to_unique_sentinel`); both end with EOS:

    tokens   The cute dog walks in the park
    inputs   The <X> walks in <Y> park </s>
    targets  <X> cute dog <Y> the <Z> </s>

Sentinel k is `sentinels[k]` (T5: vocab_size - 1 - k, i.e. <extra_id_k>). Because the counts
depend only on n, every full row of a batch corrupts to the same lengths
(`corrupted_lengths`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from research.data.noising import example_rng, row_texts

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0


def noise_counts(length: int, noise_density: float = NOISE_DENSITY,
                 mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH) -> tuple[int, int]:
  """(noise tokens, noise spans) of an example of `length` tokens (random_spans_noise_mask)."""
  length = max(length, 2)
  noise = int(np.round(np.float32(length) * np.float32(noise_density)))
  noise = min(max(noise, 1), length - 1)
  spans = int(np.round(np.float32(noise) / np.float32(mean_noise_span_length)))
  return noise, max(spans, 1)


def corrupted_lengths(length: int, noise_density: float = NOISE_DENSITY,
                      mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH) -> tuple[int, int]:
  """(inputs, targets) lengths, EOS included, of a corrupted example of `length` tokens:
  non-noise tokens + one sentinel per span + EOS, and noise tokens + sentinels + EOS."""
  noise, spans = noise_counts(length, noise_density, mean_noise_span_length)
  return max(length, 2) - noise + spans + 1, noise + spans + 1


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths of a uniformly random partition of num_items into num_segments non-empty runs."""
  first_in_segment = np.zeros(num_items, np.int64)
  first_in_segment[1:] = rng.permutation(np.arange(num_items - 1) < num_segments - 1)
  return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)


def random_spans_noise_mask(length: int, rng: np.random.Generator,
                            noise_density: float = NOISE_DENSITY,
                            mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH) -> np.ndarray:
  """bool[length]: which tokens are noise. Spans alternate, starting with non-noise."""
  padded = max(length, 2)
  noise, spans = noise_counts(length, noise_density, mean_noise_span_length)
  noise_lengths = _random_segmentation(noise, spans, rng)
  nonnoise_lengths = _random_segmentation(padded - noise, spans, rng)
  interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
  starts = np.zeros(padded, np.int64)
  starts[np.cumsum(interleaved)[:-1]] = 1
  return (np.cumsum(starts) % 2 == 1)[:length]


def replace_spans(tokens: np.ndarray, spans: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
  """Each run of `spans` (bool) replaced by one sentinel, the k-th run by sentinels[k]."""
  previous = np.concatenate([[False], spans[:-1]])
  first = spans & ~previous
  out = np.where(first, sentinels[np.maximum(np.cumsum(first) - 1, 0)], tokens)
  return out[~(spans & previous)]


def corrupt(tokens: np.ndarray, noise: np.ndarray,
            sentinels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) without EOS: noise spans -> sentinels, and the spans after sentinels."""
  return replace_spans(tokens, noise, sentinels), replace_spans(tokens, ~noise, sentinels)


def corrupt_batch(batch: dict[str, np.ndarray], *, sentinels: Sequence[int], eos_id: int | None,
                  pad_id: int, decoder_start_id: int, seed: int, epoch: int,
                  noise_density: float = NOISE_DENSITY,
                  mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH) -> dict[str, np.ndarray]:
  """A data-pipeline batch (input_ids, targets, segment_ids: rows of up to T + 1 tokens) as
  encoder-decoder inputs: input_ids / attention_mask [b, S], decoder_input_ids (the targets
  shifted right after `decoder_start_id`), decoder_attention_mask, targets, loss_mask [b, L].

  Each row's tokens (its inputs and last target, padding dropped) are one example; S and L are
  `corrupted_lengths(T + 1)`, so shorter rows are padded.
  """
  rows, width = batch["input_ids"].shape
  enc_len, dec_len = corrupted_lengths(width + 1, noise_density, mean_noise_span_length)
  sentinels = np.asarray(sentinels, np.int32)
  need = noise_counts(width + 1, noise_density, mean_noise_span_length)[1]
  if len(sentinels) < need:
    raise ValueError(f"span corruption of {width + 1} tokens needs {need} sentinels, got "
                     f"{len(sentinels)}")
  out = {
      "input_ids": np.full((rows, enc_len), pad_id, np.int32),
      "attention_mask": np.zeros((rows, enc_len), np.int32),
      "decoder_input_ids": np.full((rows, dec_len), pad_id, np.int32),
      "decoder_attention_mask": np.zeros((rows, dec_len), np.int32),
      "targets": np.full((rows, dec_len), pad_id, np.int32),
  }
  eos = [] if eos_id is None else [eos_id]
  for r, tokens in row_texts(batch):
    rng = example_rng(tokens, seed, epoch)
    noise = random_spans_noise_mask(len(tokens), rng, noise_density, mean_noise_span_length)
    inputs, targets = corrupt(tokens, noise, sentinels)
    inputs, targets = np.concatenate([inputs, eos]), np.concatenate([targets, eos])
    out["input_ids"][r, :len(inputs)] = inputs
    out["attention_mask"][r, :len(inputs)] = 1
    out["targets"][r, :len(targets)] = targets
    out["decoder_attention_mask"][r, :len(targets)] = 1
    out["decoder_input_ids"][r, 0] = decoder_start_id
    out["decoder_input_ids"][r, 1:len(targets)] = targets[:-1]
  out["loss_mask"] = out["decoder_attention_mask"].astype(np.float32)
  return out
