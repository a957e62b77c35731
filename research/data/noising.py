"""What the denoising objectives' batch transforms share: a random generator per example, and
ids for the tokens they add (T5's sentinels, GLM's [MASK], [sop], [eop]).

Randomness comes from a hash of the example's tokens, the data seed and the epoch, so a
transform is a pure function of its inputs: a resumed run, another host split or another
batch order corrupt each example identically (research.train.objectives explains why).

A tokenizer built for the corpus (a char or BPE vocabulary) has no sentinel or [MASK] tokens.
The model's embedding table is usually larger than the tokenizer's vocabulary, and the rows
past it are never produced by the tokenizer, so added tokens take ids from the top of the
model's vocabulary down, as T5 numbers its sentinels (`<extra_id_0>` = vocab_size - 1). A
tokenizer that does name them (`<extra_id_0>`, `[MASK]`, ...) gets its own ids used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np


def example_rng(tokens: np.ndarray, seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
  """A generator determined by the example's tokens, the data seed, the epoch and `salt`."""
  digest = hashlib.blake2b(np.ascontiguousarray(tokens, np.int32).tobytes(), digest_size=8)
  return np.random.default_rng([seed, epoch, salt, int.from_bytes(digest.digest(), "little")])


def row_texts(batch: dict[str, np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
  """(row, int32 tokens) for every non-empty row of a data-pipeline batch: the row's n real
  inputs and the target after the last, its up to T + 1 tokens of text."""
  ids, next_ids, segments = batch["input_ids"], batch["targets"], batch["segment_ids"]
  for r in range(ids.shape[0]):
    n = int(np.sum(segments[r] != 0))
    if n:
      yield r, np.concatenate([ids[r, :n], next_ids[r, n - 1:n]]).astype(np.int32)


def added_token_ids(tokenizer, model_vocab: int, symbols: Sequence[Sequence[str]],
                    what: str) -> list[int]:
  """One id per entry of `symbols` (each a tuple of spellings a tokenizer may use).

  The tokenizer's own special token where it has one; the others take model_vocab - 1,
  model_vocab - 2, ... in order, which must all lie at or above the tokenizer's vocabulary.
  """
  specials = tokenizer.special_tokens() if tokenizer is not None else {}
  found = [next((specials[s] for s in spellings if s in specials), None) for spellings in symbols]
  missing = sum(i is None for i in found)
  used = tokenizer.vocab_size if tokenizer is not None else 0
  if model_vocab - missing < used:
    raise ValueError(
        f"{what} needs {missing} ids the tokenizer does not use, taken from the top of the "
        f"model's vocabulary: model.vocab_size={model_vocab} leaves {model_vocab - used} above "
        f"the tokenizer's {used}; set model.vocab_size>={used + missing}")
  free = iter(range(model_vocab - 1, -1, -1))
  return [int(i) if i is not None else next(free) for i in found]
