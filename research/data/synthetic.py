"""Built-in synthetic tasks: (prompt, response) pairs from a seed, no download needed.

- `copy`: `copy kqzra=` -> `kqzra` (length: symbols to copy).
- `associative_recall`: key-value pairs then a query, `recall a3 k7 z1 ?k=` -> `7` (length:
  pairs; keys are distinct letters, values digits). The in-context recall task of the
  induction-head and state-space literature (Olsson et al. 2022; Fu et al. 2023, H3).
- `modular_arithmetic`: `mod 97: 12+7+40=` -> `59` (length: operands in [0, modulus)).
- `synthetic_mix`: each example drawn from one of the three at random.

Examples are generated from `SyntheticConfig.seed` and are distinct within and across
splits (the prompt decides the answer), so the validation split is disjoint from training.
The validation split may use other lengths (`val_min_len`, `val_max_len`) to measure length
extrapolation. They serve as an LM corpus (`as_text`) and as SFT pairs (`pairs`); each task's
`solve` recomputes the answer from the prompt text alone, which the tests use to check the
generator.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from research.config.data import SyntheticConfig

LETTERS = string.ascii_lowercase
# One random stream per split, so the training examples do not depend on val_fraction
# beyond their number.
_TRAIN_STREAM, _VAL_STREAM = 0, 1
_MAX_DRAWS_PER_EXAMPLE = 20
_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class Example:
  prompt: str
  response: str
  task: str


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  # (rng, lengths, cfg) -> one Example per length; vectorised over the batch.
  make: Callable[[np.random.Generator, np.ndarray, SyntheticConfig], list[Example]]
  # The answer, recomputed from the prompt text alone.
  solve: Callable[[str], str]
  # The largest length the config allows (None: unbounded), with the reason.
  max_length: Callable[[SyntheticConfig], tuple[int, str] | None] = lambda cfg: None


def _letters(codes: np.ndarray) -> str:
  return (codes + ord("a")).astype(np.uint8).tobytes().decode("ascii")


def _make_copy(rng: np.random.Generator, lengths: np.ndarray,
               cfg: SyntheticConfig) -> list[Example]:
  symbols = rng.integers(0, cfg.alphabet, (len(lengths), int(lengths.max(initial=0))))
  out = []
  for row, n in zip(symbols, lengths):
    s = _letters(row[:n])
    out.append(Example(f"copy {s}=", s, "copy"))
  return out


def _solve_copy(prompt: str) -> str:
  return prompt.removeprefix("copy ").removesuffix("=")


def _make_recall(rng: np.random.Generator, lengths: np.ndarray,
                 cfg: SyntheticConfig) -> list[Example]:
  # Distinct keys: the first n of a random permutation of the alphabet.
  keys = np.argsort(rng.random((len(lengths), cfg.alphabet)), axis=1)
  values = rng.integers(0, 10, (len(lengths), cfg.alphabet))
  queries = rng.integers(0, lengths)
  out = []
  for k, v, n, q in zip(keys.tolist(), values.tolist(), lengths.tolist(), queries.tolist()):
    pairs = " ".join(f"{LETTERS[key]}{value}" for key, value in zip(k[:n], v[:n]))
    out.append(Example(f"recall {pairs} ?{LETTERS[k[q]]}=", str(v[q]), "associative_recall"))
  return out


def _solve_recall(prompt: str) -> str:
  body, query = prompt.removeprefix("recall ").removesuffix("=").split(" ?")
  table = {pair[0]: pair[1:] for pair in body.split(" ")}
  return table[query]


def _make_arithmetic(rng: np.random.Generator, lengths: np.ndarray,
                     cfg: SyntheticConfig) -> list[Example]:
  operands = rng.integers(0, cfg.modulus, (len(lengths), int(lengths.max(initial=0))))
  out = []
  for row, n in zip(operands, lengths):
    row = row[:n].tolist()
    out.append(Example(f"mod {cfg.modulus}: " + "+".join(map(str, row)) + "=",
                       str(sum(row) % cfg.modulus), "modular_arithmetic"))
  return out


def _solve_arithmetic(prompt: str) -> str:
  head, expression = prompt.removesuffix("=").split(": ")
  modulus = int(head.removeprefix("mod "))
  return str(sum(int(x) for x in expression.split("+")) % modulus)


TASKS: dict[str, Task] = {
    t.name: t for t in (
        Task("copy", _make_copy, _solve_copy),
        Task("associative_recall", _make_recall, _solve_recall,
             lambda cfg: (cfg.alphabet, "keys are distinct letters, at most `alphabet`")),
        Task("modular_arithmetic", _make_arithmetic, _solve_arithmetic),
    )
}
# Name -> the tasks it draws from, uniformly.
MIXTURES: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in TASKS},
    "synthetic_mix": tuple(TASKS),
}
NAMES = tuple(MIXTURES)


def solve(example: Example) -> str:
  return TASKS[example.task].solve(example.prompt)


def generate(name: str, cfg: SyntheticConfig,
             val_fraction: float = 0.1) -> tuple[list[Example], list[Example]]:
  """(train, validation) examples of task or mixture `name`; `val_fraction` of
  `cfg.num_examples` go to validation. All prompts are distinct."""
  if name not in MIXTURES:
    raise ValueError(f"unknown synthetic task {name!r}; choose one of: {', '.join(NAMES)}")
  tasks = [TASKS[t] for t in MIXTURES[name]]
  for task in tasks:
    bound = task.max_length(cfg)
    for val in (False, True):
      longest = cfg.lengths(val)[1]
      if bound is not None and longest > bound[0]:
        field = "val_max_len" if val else "max_len"
        raise ValueError(
            f"SyntheticConfig.{field}={longest} is too long for {task.name}: {bound[1]} "
            f"({bound[0]})")
  n_val = round(cfg.num_examples * val_fraction)
  seen: set[str] = set()
  train = _sample(tasks, cfg, cfg.num_examples - n_val, val=False, seen=seen)
  val = _sample(tasks, cfg, n_val, val=True, seen=seen)
  return train, val


def _sample(tasks: Sequence[Task], cfg: SyntheticConfig, count: int, *, val: bool,
            seen: set[str]) -> list[Example]:
  rng = np.random.default_rng([cfg.seed, _VAL_STREAM if val else _TRAIN_STREAM])
  lo, hi = cfg.lengths(val)
  out: list[Example] = []
  drawn = 0
  while len(out) < count:
    if drawn > _MAX_DRAWS_PER_EXAMPLE * count + _CHUNK:
      raise ValueError(
          f"{'+'.join(t.name for t in tasks)} with lengths {lo}..{hi} has too few distinct "
          f"examples for SyntheticConfig.num_examples={cfg.num_examples} (found "
          f"{len(seen)}); lower num_examples or widen the lengths")
    # Drawn in vectorised chunks of a fixed size (so that a split's first n examples do not
    # depend on its size); duplicates of earlier prompts are dropped.
    chunk = _CHUNK
    lengths = rng.integers(lo, hi + 1, chunk)
    which = rng.integers(0, len(tasks), chunk)
    made: list[Example | None] = [None] * chunk
    for t, task in enumerate(tasks):
      rows = np.flatnonzero(which == t)
      for i, example in zip(rows, task.make(rng, lengths[rows], cfg)):
        made[i] = example
    drawn += chunk
    for example in made:
      if example.prompt not in seen and len(out) < count:
        seen.add(example.prompt)
        out.append(example)
  return out


def as_text(examples: Iterable[Example]) -> str:
  """An LM corpus: each example `prompt + response` on its own line."""
  return "".join(f"{e.prompt}{e.response}\n" for e in examples)


def pairs(examples: Iterable[Example]) -> list[tuple[str, str]]:
  """(prompt, response) pairs, for supervised fine-tuning."""
  return [(e.prompt, e.response) for e in examples]
