"""research.data.synthetic: correct answers, determinism, disjoint splits, lengths."""

from __future__ import annotations

import re

import pytest

from research.config.data import SyntheticConfig
from research.data import synthetic

SMALL = SyntheticConfig(num_examples=400, min_len=2, max_len=6, val_min_len=7, val_max_len=9)


def check_answer(example: synthetic.Example) -> None:
  """Independent of the generator and of `solve`: parse with regular expressions."""
  if example.task == "copy":
    assert re.fullmatch(r"copy ([a-z]+)=", example.prompt)[1] == example.response
  elif example.task == "associative_recall":
    m = re.fullmatch(r"recall ((?:[a-z]\d )+)\?([a-z])=", example.prompt)
    pairs = re.findall(r"([a-z])(\d)", m[1])
    keys = [k for k, _ in pairs]
    assert len(set(keys)) == len(keys)
    assert dict(pairs)[m[2]] == example.response
  else:
    m = re.fullmatch(r"mod (\d+): (\d+(?:\+\d+)*)=", example.prompt)
    modulus, operands = int(m[1]), [int(x) for x in m[2].split("+")]
    assert all(0 <= x < modulus for x in operands)
    assert int(example.response) == sum(operands) % modulus


def length_of(example: synthetic.Example) -> int:
  if example.task == "copy":
    return len(example.response)
  if example.task == "associative_recall":
    return example.prompt.count(" ") - 1
  return example.prompt.count("+") + 1


@pytest.mark.parametrize("name", synthetic.NAMES)
def test_answers_are_correct_and_solvable(name):
  train, val = synthetic.generate(name, SMALL, val_fraction=0.25)
  for example in train + val:
    check_answer(example)
    assert synthetic.solve(example) == example.response
  if name == "synthetic_mix":
    assert {e.task for e in train} == set(synthetic.TASKS)


@pytest.mark.parametrize("name", synthetic.NAMES)
def test_splits_are_disjoint_sized_and_use_their_lengths(name):
  train, val = synthetic.generate(name, SMALL, val_fraction=0.25)
  assert (len(train), len(val)) == (300, 100)
  prompts = [e.prompt for e in train + val]
  assert len(set(prompts)) == len(prompts)
  assert {length_of(e) for e in train} <= set(range(2, 7))
  assert {length_of(e) for e in val} <= set(range(7, 10))


def test_generation_is_deterministic_and_seeded():
  a = synthetic.generate("synthetic_mix", SMALL)
  assert a == synthetic.generate("synthetic_mix", SMALL)
  assert a != synthetic.generate("synthetic_mix", SyntheticConfig(**{**vars(SMALL), "seed": 1}))
  # More validation examples leave the training examples a prefix of the same stream.
  more_val = synthetic.generate("synthetic_mix", SMALL, val_fraction=0.5)[0]
  assert more_val == a[0][:len(more_val)]


def test_corpus_and_pair_views():
  train, _ = synthetic.generate("copy", SMALL)
  text = synthetic.as_text(train)
  assert text.splitlines() == [e.prompt + e.response for e in train]
  assert synthetic.pairs(train)[0] == (train[0].prompt, train[0].response)


def test_impossible_requests_are_errors():
  with pytest.raises(ValueError, match="val_max_len=30 is too long for associative_recall"):
    synthetic.generate("associative_recall", SyntheticConfig(val_max_len=30))
  # Two symbols, lengths 1..2: only 6 distinct copy prompts.
  tiny = SyntheticConfig(num_examples=50, min_len=1, max_len=2, alphabet=2)
  with pytest.raises(ValueError, match="too few distinct examples"):
    synthetic.generate("copy", tiny)
  with pytest.raises(ValueError, match="unknown synthetic task 'sorting'"):
    synthetic.generate("sorting", SMALL)
