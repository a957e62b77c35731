"""`build(DataConfig) -> Dataset`: the tokenizer and the tokenized splits of a run.

Building resolves the source (a path, a synthetic task, or a registered dataset fetched and
verified), trains the tokenizer on the whole source or loads it (kind "file"), tokenizes
once, and caches both under `DataConfig.resolved_cache_dir()`:
- `tokenizers/<key>`: the trained tokenizer, keyed by the source's content hash and the
  tokenizer config;
- `tokens/<key>`: the token streams, keyed by the source's content hash, the tokenizer's
  fingerprint and the framing options (add_bos, val_fraction).
A second build with the same inputs reads both back and tokenizes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from research import tokenizers
from research.config.data import DataConfig
from research.data import cache, documents, pairs
from research.data.batching import Layout, TrainIterator, eval_batches
from research.data.documents import TokenizedSplit
from research.tokenizers import Tokenizer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Dataset:
  config: DataConfig
  tokenizer: Tokenizer
  train: TokenizedSplit
  val: TokenizedSplit
  # The cache key of the token streams: equal keys, equal tokens.
  key: str
  # Whether the token streams were read from the cache rather than tokenized.
  from_cache: bool
  cache_path: pathlib.Path

  @property
  def train_tokens(self) -> int:
    return self.train.num_tokens

  @property
  def val_tokens(self) -> int:
    return self.val.num_tokens

  @property
  def layout(self) -> Layout:
    pad = self.tokenizer.pad_id
    pad = 0 if pad is None else pad
    # Padded positions are masked out everywhere; without a pad token any id serves.
    return Layout(self.config.seq_len, self.config.pack, self.config.loss_on == "answer",
                  pad, self._pair_spec(pad), self.config.cross_document_attention)

  def _pair_spec(self, pad: int) -> pairs.PairSpec | None:
    c, tok = self.config, self.tokenizer
    if c.pairs == "none":
      return None
    # BERT's [CLS]/[SEP]; a RoBERTa-style vocabulary's <s> and </s> serve as well.
    cls = tok.cls_id if tok.cls_id is not None else tok.bos_id
    sep = tok.sep_id if tok.sep_id is not None else tok.eos_id
    if cls is None or sep is None:
      raise ValueError(
          f"DataConfig.pairs={c.pairs!r} needs [CLS] and [SEP] tokens (or <s> and </s>); the "
          f"tokenizer's special tokens are {tok.special_tokens()}: set "
          "TokenizerConfig.special_tokens, e.g. ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')")
    lead = 1 if c.add_bos and tok.bos_id is not None else 0
    return pairs.PairSpec(c.pairs, cls, sep, pad, c.seed, lead=lead, trail=1)

  @property
  def order_tag(self) -> str:
    """Identifies the token streams and their training order (checked on resume)."""
    c = self.config
    return cache.key(data=self.key, seq_len=c.seq_len, pack=c.pack, seed=c.seed,
                     **({"pairs": c.pairs} if c.pairs != "none" else {}))

  def steps_per_epoch(self, epoch: int = 0) -> int:
    """Global batches in training epoch `epoch` (packed epochs differ by at most one)."""
    starts, _ = self.layout.train_rows(self.train, self.config.seed, epoch)
    return len(starts) // self.config.batch_size

  def train_iterator(self, state: dict[str, Any] | None = None, process_index: int = 0,
                     process_count: int = 1) -> TrainIterator:
    return TrainIterator(
        self.train, self.layout, batch_size=self.config.batch_size, seed=self.config.seed,
        tag=self.order_tag, state=state, process_index=process_index,
        process_count=process_count)

  def eval_batches(self, max_batches: int | None = None, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    return eval_batches(
        self.val, self.layout, batch_size=self.config.batch_size, max_batches=max_batches,
        process_index=process_index, process_count=process_count)

  def summary(self) -> dict[str, Any]:
    """Numbers worth logging once."""
    return {
        "source": self.config.source_name, "tokenizer": self.config.tokenizer.kind,
        "vocab_size": self.tokenizer.vocab_size, "train_tokens": self.train_tokens,
        "val_tokens": self.val_tokens, "train_docs": self.train.num_docs,
        "val_docs": self.val.num_docs, "steps_per_epoch": self.steps_per_epoch(),
        "from_cache": self.from_cache,
    }


def build(cfg: DataConfig) -> Dataset:
  """Resolves the source, builds the tokenizer, tokenizes (or reads the cache), checks that
  the layout yields at least one batch."""
  source = documents.source(cfg)
  if cfg.split_lines and not isinstance(source, documents.TextSource):
    raise ValueError(f"DataConfig.split_lines=True applies to text files; {cfg.source_name!r} "
                     "is a synthetic task, one document per example already")
  if cfg.loss_on == "answer" and not source.has_answers:
    raise ValueError(
        f"DataConfig.loss_on='answer' needs a question/answer source (a synthetic task or a "
        f".jsonl file of prompt/response records), "
        f"but {cfg.source_name!r} is plain text; use loss_on='all'")
  root = cfg.resolved_cache_dir()
  tokenizer = _tokenizer(cfg, source, root)
  key = cache.key(version=documents.FORMAT_VERSION, source=source.identity,
                  tokenizer=tokenizer.fingerprint(), add_bos=cfg.add_bos,
                  val_fraction=cfg.val_fraction,
                  **({"split_lines": True} if cfg.split_lines else {}))
  path = root / "tokens" / key
  splits = cache.load_splits(path)
  from_cache = splits is not None
  if splits is None:
    log.info("tokenizing %s with %s", cfg.source_name, cfg.tokenizer.kind)
    splits = source.tokenize(tokenizer, cfg)
    cache.save_splits(path, splits, {"source": cfg.source_name, "identity": source.identity,
                                     "tokenizer": tokenizer.fingerprint()})
    splits = cache.load_splits(path)
  ds = Dataset(cfg, tokenizer, splits["train"], splits["val"], key, from_cache, path)
  _check_fits(ds)
  return ds


def _tokenizer(cfg: DataConfig, source: documents.TextSource | documents.SyntheticSource
               | documents.JsonlSource,
               root: pathlib.Path) -> Tokenizer:
  """Loads the tokenizer of kind "file"; else the cached one trained on this source, else
  trains it (on the whole source: both splits) and caches it."""
  tok_cfg = cfg.tokenizer
  if tok_cfg.kind == "file":
    return tokenizers.build(tok_cfg)
  path = root / "tokenizers" / cache.key(config=tok_cfg.to_dict(), source=source.identity)
  if not cache.is_complete(path):
    log.info("training a %s tokenizer on %s", tok_cfg.kind, cfg.source_name)
    trained = tokenizers.build(tok_cfg, source.training_texts())
    cache.write_atomic(path, trained.save, {"config": tok_cfg.to_dict(),
                                            "source": source.identity})
  # Always the cached copy: processes that trained at once all use the one that won.
  return tokenizers.load(path)


def _check_fits(ds: Dataset) -> None:
  cfg = ds.config
  need = cfg.seq_len + 1
  if cfg.pairs != "none" and ds.train.num_docs < 2:
    raise ValueError(f"DataConfig.pairs={cfg.pairs!r} needs at least two documents (sentences); "
                     f"{cfg.source_name!r} has {ds.train.num_docs}: set split_lines=True for a "
                     "text file")
  if not cfg.pack and cfg.pairs == "none" and ds.train.num_docs:
    longest = int(max(ds.train.doc_lengths.max(), ds.val.doc_lengths.max(initial=0)))
    if longest > need:
      raise ValueError(
          f"DataConfig.pack=False puts one document per row, but the longest document has "
          f"{longest} tokens (BOS/EOS included) and a row holds seq_len + 1 = {need}; raise "
          f"DataConfig.seq_len or use pack=True")
  rows = ds.layout.min_train_rows(ds.train)
  if rows < cfg.batch_size:
    unit = "windows of seq_len + 1 tokens" if cfg.pack else "documents"
    raise ValueError(
        f"the training split of {cfg.source_name!r} ({ds.train_tokens} tokens, "
        f"{ds.train.num_docs} documents) gives {rows} {unit} per epoch, fewer than "
        f"DataConfig.batch_size={cfg.batch_size}; lower batch_size or seq_len, or use more data")
