"""Sources of documents, and their tokenization into train/validation token streams.

A split is a `TokenizedSplit`: its documents' tokens back to back, where each document is
`[bos] + tokens + [eos]` (BOS when DataConfig.add_bos and the tokenizer has one; EOS, or SEP
for BERT-style vocabularies, always), the document offsets, and which tokens belong to an
answer (for loss_on="answer").

- A text file (a registered dataset or `DataConfig.path`) is one document. Its tokens are
  split into two contiguous regions: the first 1 - val_fraction for training, the rest for
  validation, so no validation window overlaps a training one. With `DataConfig.split_lines`
  each non-empty line is a document instead (the sentences of sentence-pair objectives), the
  last val_fraction of the lines validating.
- A synthetic task gives one document per (prompt, response) example, generated disjoint
  per split; the response tokens and the closing EOS are the answer.
- A `.jsonl` file of prompt/response records gives one document per record; its last
  `val_fraction` of records validate. Pairs become documents through DataConfig.template
  (research.data.prompt_response), the synthetic tasks' as well.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from collections.abc import Sequence

import numpy as np

from research.config.data import DataConfig
from research.data import prompt_response, sources, synthetic
from research.tokenizers import Tokenizer

# Bump when the way documents become tokens changes: it invalidates cached token files.
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
  tokens: np.ndarray      # int32: every document's tokens, back to back
  doc_starts: np.ndarray  # int64: document d is tokens[doc_starts[d]:doc_starts[d + 1]]
  answer: np.ndarray      # bool: the token belongs to a response (or the EOS closing one)

  @property
  def num_tokens(self) -> int:
    return len(self.tokens)

  @property
  def num_docs(self) -> int:
    return len(self.doc_starts) - 1

  @property
  def doc_lengths(self) -> np.ndarray:
    return np.diff(self.doc_starts)

  @functools.cached_property
  def doc_ids(self) -> np.ndarray:
    """int32: the document index of every token."""
    return np.repeat(np.arange(self.num_docs, dtype=np.int32), self.doc_lengths)

  def arrays(self) -> dict[str, np.ndarray]:
    return {"tokens": self.tokens, "doc_starts": self.doc_starts, "answer": self.answer}

  @classmethod
  def empty(cls) -> "TokenizedSplit":
    return cls(np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, bool))


def _split(docs: Sequence[np.ndarray], answers: Sequence[np.ndarray]) -> TokenizedSplit:
  if not docs:
    return TokenizedSplit.empty()
  starts = np.zeros(len(docs) + 1, np.int64)
  np.cumsum([len(d) for d in docs], out=starts[1:])
  return TokenizedSplit(np.concatenate(docs).astype(np.int32),
                        starts, np.concatenate(answers).astype(bool))


def boundary_ids(tokenizer: Tokenizer, add_bos: bool) -> tuple[list[int], int]:
  """([bos] or [], the end-of-document id) used to frame documents."""
  end = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
  if end is None:
    raise ValueError(
        f"the tokenizer has no eos or sep special token to end documents with "
        f"(special tokens: {tokenizer.special_tokens()}); add '</s>' to "
        "TokenizerConfig.special_tokens")
  bos = tokenizer.bos_id
  return ([bos] if add_bos and bos is not None else []), end


class TextSource:
  """A UTF-8 text file: one document."""

  has_answers = False

  def __init__(self, path: pathlib.Path, name: str):
    self.path = path
    self.name = name

  @functools.cached_property
  def identity(self) -> str:
    return "sha256:" + sources.file_sha256(self.path)

  @functools.cached_property
  def text(self) -> str:
    try:
      return self.path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{self.path} is not UTF-8 text: {e}") from e

  def training_texts(self) -> list[str]:
    return [self.text]

  def tokenize(self, tokenizer: Tokenizer, cfg: DataConfig) -> dict[str, TokenizedSplit]:
    bos, eos = boundary_ids(tokenizer, cfg.add_bos)
    if cfg.split_lines:
      return self._tokenize_lines(tokenizer, cfg, bos, eos)
    ids = tokenizer.encode_array(self.text)
    cut = len(ids) - round(len(ids) * cfg.val_fraction)
    # The document is cut in two: training keeps its start (BOS), validation its end (EOS).
    end = [np.asarray([eos], np.int32)]
    train = np.concatenate(
        [np.asarray(bos, np.int32), ids[:cut]] + (end if cut == len(ids) else []))
    splits = {"train": _split([train], [np.zeros(len(train), bool)]),
              "val": TokenizedSplit.empty()}
    if cut < len(ids):
      val = np.concatenate([ids[cut:]] + end)
      splits["val"] = _split([val], [np.zeros(len(val), bool)])
    return splits


  def _tokenize_lines(self, tokenizer: Tokenizer, cfg: DataConfig, bos: list[int],
                      eos: int) -> dict[str, TokenizedSplit]:
    lines = [line for line in self.text.split("\n") if line.strip()]
    cut = len(lines) - round(len(lines) * cfg.val_fraction)
    splits = {}
    for name, part in (("train", lines[:cut]), ("val", lines[cut:])):
      docs = [np.asarray(bos + ids + [eos], np.int32) for ids in tokenizer.encode_batch(part)]
      splits[name] = _split(docs, [np.zeros(len(d), bool) for d in docs])
    return splits


class SyntheticSource:
  """A built-in synthetic task: one document per (prompt, response) example."""

  has_answers = True

  def __init__(self, cfg: DataConfig):
    self.name = cfg.dataset
    self.cfg = cfg

  @functools.cached_property
  def identity(self) -> str:
    spec = {"task": self.name, "synthetic": dataclasses.asdict(self.cfg.synthetic),
            "val_fraction": self.cfg.val_fraction, "generator": FORMAT_VERSION}
    if self.cfg.template is not None:  # unset keeps the cache keys of earlier versions
      spec["template"] = self.cfg.template
    return "synthetic:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

  @functools.cached_property
  def examples(self) -> tuple[list[synthetic.Example], list[synthetic.Example]]:
    return synthetic.generate(self.name, self.cfg.synthetic, self.cfg.val_fraction)

  @property
  def splits(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    train, val = self.examples
    return synthetic.pairs(train), synthetic.pairs(val)

  def training_texts(self) -> list[str]:
    if self.cfg.template is None:
      train, val = self.examples
      return [synthetic.as_text(train), synthetic.as_text(val)]
    return _pair_texts(self.splits, self.cfg)

  def tokenize(self, tokenizer: Tokenizer, cfg: DataConfig) -> dict[str, TokenizedSplit]:
    return _tokenize_pairs(self.splits, tokenizer, cfg)


class JsonlSource:
  """A JSONL file of prompt/response records: one document per record."""

  has_answers = True

  def __init__(self, path: pathlib.Path, cfg: DataConfig):
    self.path = path
    self.name = str(path)
    self.cfg = cfg

  @functools.cached_property
  def identity(self) -> str:
    spec = {"sha256": sources.file_sha256(self.path), "template": prompt_response.default_template(self.cfg),
            "fields": [self.cfg.prompt_field, self.cfg.response_field]}
    return "jsonl:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

  @functools.cached_property
  def splits(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    records = prompt_response.read_jsonl(self.path, self.cfg.prompt_field, self.cfg.response_field)
    cut = len(records) - round(len(records) * self.cfg.val_fraction)
    return records[:cut], records[cut:]

  def training_texts(self) -> list[str]:
    return _pair_texts(self.splits, self.cfg)

  def tokenize(self, tokenizer: Tokenizer, cfg: DataConfig) -> dict[str, TokenizedSplit]:
    return _tokenize_pairs(self.splits, tokenizer, cfg)


def _pair_texts(splits, cfg: DataConfig) -> list[str]:
  template = prompt_response.default_template(cfg)
  symbols = cfg.tokenizer.specials()
  return ["".join(prompt_response.training_text(template, p, r, symbols) + "\n" for p, r in split)
          for split in splits]


def _tokenize_pairs(splits, tokenizer: Tokenizer, cfg: DataConfig) -> dict[str, TokenizedSplit]:
  bos, eos = boundary_ids(tokenizer, cfg.add_bos)
  template = prompt_response.Template.build(prompt_response.default_template(cfg), tokenizer)
  out = {}
  for name, split in zip(("train", "val"), splits):
    prompts = tokenizer.encode_batch([p for p, _ in split])
    responses = tokenizer.encode_batch([r for _, r in split])
    docs, answers = zip(*(template.encode(p, r, bos, eos) for p, r in zip(prompts, responses))) \
        if split else ((), ())
    out[name] = _split(list(docs), list(answers))
  return out


def source(cfg: DataConfig) -> TextSource | SyntheticSource | JsonlSource:
  """The source `cfg` names: its path, else a synthetic task, else a registered dataset."""
  if cfg.path:
    path = pathlib.Path(cfg.path).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f"DataConfig.path={cfg.path!r}: no such file")
    return JsonlSource(path, cfg) if cfg.is_jsonl else TextSource(path, str(path))
  if cfg.dataset in synthetic.MIXTURES:
    return SyntheticSource(cfg)
  if cfg.dataset in sources.SOURCES:
    remote = sources.SOURCES[cfg.dataset]
    return TextSource(sources.locate(remote, cfg.resolved_cache_dir()), cfg.dataset)
  raise ValueError(
      f"DataConfig.dataset={cfg.dataset!r} is not allowed; choose one of: "
      + ", ".join(repr(n) for n in (*sources.SOURCES, *synthetic.NAMES))
      + " (or set DataConfig.path to a text file)")
