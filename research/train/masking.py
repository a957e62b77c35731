"""Masked-LM input corruption on the host (numpy): BERT, whole-word, MacBERT; static or dynamic.

    batch = mask_batch(batch, tokenizer, MaskingConfig(), seed=0, epoch=3)

For each row (Devlin et al. 2019, section 3.1 and appendix A.1; create_pretraining_data.py):
1. the maskable tokens are the real ones that are not special tokens ([CLS], [SEP], padding,
   BOS/EOS, [MASK]; [UNK] is maskable, as in BERT);
2. k = max(1, round(select_prob * maskable)) of them are selected (at most max_predictions):
   in a random order of tokens, or with `whole_word` of words, a word taken only while the
   count stays <= k, as BERT's whole word masking does;
3. each selected token is replaced with probability replace_prob by [MASK] (strategy "bert")
   or by a similar token (strategy "macbert", Cui et al. 2020, section 3.2; a random token
   where none is known), with probability random_prob by a random non-special token, and is
   left unchanged otherwise;
4. `targets` are the original tokens and `loss_mask` is 1 exactly at the selected ones.

The randomness of a row comes from a hash of its real tokens, the data seed and, in "dynamic"
mode, the epoch (in "static" mode the epoch is left out, so a sequence gets the same mask every
epoch, as if masked once when preprocessing). A row's mask therefore does not depend on the
batch it is in or the host that builds it, and a resumed run masks exactly as before.

Words: a WordPiece token continues a word when it starts with "##"; for other tokenizers a
token continues the word of the previous one when they join letter or digit to letter or digit
(no space between: byte-level BPE's and SentencePiece's pieces carry their leading space).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib

import numpy as np

from research.config.masking import MaskingConfig
from research.tokenizers import Tokenizer

log = logging.getLogger(__name__)

# Kept apart from every other use of the data seed.
_STREAM = 0x4D4C4D


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Per-id facts about a tokenizer's vocabulary that masking needs."""

  special: np.ndarray  # bool[V]: never selected, never a replacement
  marker: np.ndarray | None  # bool[V]: WordPiece "##" continuation pieces (None: not WordPiece)
  first_alnum: np.ndarray  # bool[V]: the token's text starts with a letter or digit
  last_alnum: np.ndarray  # bool[V]
  replacements: np.ndarray  # int32: the ids a replacement may be (not special, not [UNK])
  mask_id: int

  def continues(self, ids_BT: np.ndarray) -> np.ndarray:
    """bool[B, T]: the token continues the word of the token before it."""
    prev = np.concatenate([np.full_like(ids_BT[:, :1], -1), ids_BT[:, :-1]], axis=1)
    has_prev = prev >= 0
    prev = np.maximum(prev, 0)
    if self.marker is not None:
      joined = self.marker[ids_BT]
    else:
      joined = self.first_alnum[ids_BT] & self.last_alnum[prev]
    return has_prev & joined & ~self.special[prev]


_VOCABULARIES: dict[str, Vocabulary] = {}


def vocabulary(tokenizer: Tokenizer) -> Vocabulary:
  """The tokenizer's `Vocabulary`, computed once per tokenizer (by fingerprint)."""
  key = tokenizer.fingerprint()
  if key not in _VOCABULARIES:
    _VOCABULARIES[key] = _build_vocabulary(tokenizer)
  return _VOCABULARIES[key]


def _build_vocabulary(tokenizer: Tokenizer) -> Vocabulary:
  if tokenizer.mask_id is None:
    raise ValueError(f"masked-LM objectives need a mask token ([MASK] or <mask>); the tokenizer "
                     f"has {tokenizer.special_tokens()}: add one to TokenizerConfig.special_tokens")
  size = tokenizer.vocab_size
  special = np.zeros(size, bool)
  for symbol, i in tokenizer.special_tokens().items():
    if i != tokenizer.unk_id:
      special[i] = True
  texts = [tokenizer.decode([i]) for i in range(size)]
  first = np.array([bool(t) and t[0].isalnum() for t in texts])
  last = np.array([bool(t) and t[-1].isalnum() for t in texts])
  marker = None
  backend = getattr(tokenizer, "backend", None)
  if backend is not None and json.loads(backend.to_str())["model"]["type"] == "WordPiece":
    marker = np.array([(backend.id_to_token(i) or "").startswith("##") for i in range(size)])
  ordinary = ~special
  if tokenizer.unk_id is not None:
    ordinary[tokenizer.unk_id] = False
  pool = np.flatnonzero(ordinary).astype(np.int32)
  return Vocabulary(special, marker, first, last, pool, tokenizer.mask_id)


def row_rng(tokens: np.ndarray, seed: int, epoch: int | None) -> np.random.Generator:
  """A generator from a hash of the row's tokens, the seed and (dynamic masking) the epoch."""
  digest = hashlib.blake2b(np.ascontiguousarray(tokens, np.int64).tobytes(), digest_size=16)
  words = np.frombuffer(digest.digest(), np.uint32).tolist()
  epoch_words = [0, 0] if epoch is None else [1, epoch]
  return np.random.default_rng([_STREAM, seed, *epoch_words, *words])


def _select(cand: np.ndarray, word_start: np.ndarray, k: int, rng: np.random.Generator,
            whole_word: bool) -> np.ndarray:
  """bool[T]: k candidate tokens (whole words: at most k) chosen in a random order."""
  t = len(cand)
  chosen = np.zeros(t, bool)
  if k == 0:
    return chosen
  if not whole_word:
    order = rng.permutation(np.flatnonzero(cand))
    chosen[order[:k]] = True
    return chosen
  starts = np.flatnonzero(word_start)
  ends = np.append(starts[1:], t)
  # A word runs from its start to the next start or the next non-candidate token.
  lengths = np.array([np.argmin(cand[s:e]) if not cand[s:e].all() else e - s
                      for s, e in zip(starts, ends)], np.int64)
  count = 0
  for w in rng.permutation(len(starts)):
    if count + lengths[w] <= k:
      chosen[starts[w]:starts[w] + lengths[w]] = True
      count += lengths[w]
      if count == k:
        break
  return chosen


def mask_batch(batch: dict[str, np.ndarray], tokenizer: Tokenizer, cfg: MaskingConfig, *,
               seed: int, epoch: int) -> dict[str, np.ndarray]:
  """`batch` with masked input_ids, targets (the original tokens) and loss_mask (the selected)."""
  vocab = vocabulary(tokenizer)
  similar = similar_tokens(tokenizer, cfg) if cfg.strategy == "macbert" else None
  ids = np.asarray(batch["input_ids"]).astype(np.int32)
  if ids.max(initial=0) >= len(vocab.special):
    raise ValueError(f"input ids up to {ids.max()} exceed the tokenizer's vocabulary "
                     f"({len(vocab.special)})")
  real = np.asarray(batch["segment_ids"]) > 0 if "segment_ids" in batch else np.ones(ids.shape, bool)
  cand = real & ~vocab.special[ids]
  starts = cand & ~(vocab.continues(ids) & np.roll(cand, 1, axis=1)) if cfg.whole_word else cand
  inputs, chosen = ids.copy(), np.zeros(ids.shape, bool)
  for r in range(ids.shape[0]):
    rng = row_rng(ids[r][real[r]], seed, epoch if cfg.mode == "dynamic" else None)
    n = int(cand[r].sum())
    k = max(1, round(cfg.select_prob * n)) if n else 0
    if cfg.max_predictions is not None:
      k = min(k, cfg.max_predictions)
    chosen[r] = _select(cand[r], starts[r], k, rng, cfg.whole_word)
    where = np.flatnonzero(chosen[r])
    u = rng.random(len(where))
    replace = u < cfg.replace_prob
    random = (u >= cfg.replace_prob) & (u < cfg.replace_prob + cfg.random_prob)
    randoms = vocab.replacements[rng.integers(0, len(vocab.replacements), len(where))]
    if similar is None:
      replaced = np.full(len(where), vocab.mask_id, np.int32)
    else:
      # MacBERT: a similar token where one is known, else a random one.
      options = similar[ids[r, where]]
      known = (options >= 0).sum(axis=1)
      pick = np.minimum((rng.random(len(where)) * known).astype(np.int64), np.maximum(known - 1, 0))
      replaced = np.where(known > 0, options[np.arange(len(where)), pick], randoms)
    inputs[r, where] = np.where(replace, replaced, np.where(random, randoms, ids[r, where]))
  return {**batch, "input_ids": inputs, "targets": ids,
          "loss_mask": chosen.astype(np.float32)}


# ------------------------------------------------------------------ MacBERT similar tokens

_SIMILAR: dict[tuple, np.ndarray] = {}


def similar_tokens(tokenizer: Tokenizer, cfg: MaskingConfig) -> np.ndarray:
  """int32[V, similar_top_k]: each id's similar ids, most similar first, -1 past the known ones."""
  source = cfg.similar_table or cfg.similar_embeddings
  key = (source, tokenizer.fingerprint(), cfg.similar_top_k)
  if key not in _SIMILAR:
    vocab = vocabulary(tokenizer)
    if cfg.similar_table:
      _SIMILAR[key] = _table_neighbours(tokenizer, pathlib.Path(cfg.similar_table), vocab,
                                        cfg.similar_top_k)
    else:
      excluded = np.ones(len(vocab.special), bool)
      excluded[vocab.replacements] = False
      _SIMILAR[key] = embedding_neighbours(np.load(cfg.similar_embeddings), excluded,
                                           cfg.similar_top_k)
  return _SIMILAR[key]


def _table_neighbours(tokenizer: Tokenizer, path: pathlib.Path, vocab: Vocabulary,
                      k: int) -> np.ndarray:
  table = json.loads(path.read_text(encoding="utf-8"))
  if not isinstance(table, dict):
    raise ValueError(f"MaskingConfig.similar_table={str(path)!r} must hold a JSON object "
                     "{\"token\": [\"similar token\", ...]}")
  out = np.full((len(vocab.special), k), -1, np.int32)
  single = lambda text: (lambda ids: ids[0] if len(ids) == 1 else None)(tokenizer.encode(text))
  used = skipped = 0
  for word, others in table.items():
    i = single(word)
    allowed = np.zeros(len(vocab.special), bool)
    allowed[vocab.replacements] = True
    ids = [j for j in (single(o) for o in others) if j is not None and j != i and allowed[j]]
    if i is None or vocab.special[i] or not ids:
      skipped += 1
      continue
    out[i, :min(k, len(ids))] = ids[:k]
    used += 1
  log.info("similar_table %s: %d entries used, %d not single tokens of the vocabulary",
           path, used, skipped)
  if not used:
    raise ValueError(f"MaskingConfig.similar_table={str(path)!r}: none of its {len(table)} "
                     "entries maps a single token to single tokens of this tokenizer")
  return out


def embedding_neighbours(embeddings: np.ndarray, special: np.ndarray, k: int,
                         chunk: int = 2048) -> np.ndarray:
  """int32[V, k]: each id's k nearest ids by cosine similarity, never itself nor a `special`
  one (special ids get none)."""
  size = len(special)
  if embeddings.ndim != 2 or embeddings.shape[0] < size:
    raise ValueError(f"MaskingConfig.similar_embeddings: expected a [vocab >= {size}, dim] "
                     f"matrix, got shape {embeddings.shape}")
  emb = np.asarray(embeddings[:size], np.float32)
  emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  out = np.full((size, k), -1, np.int32)
  k_eff = min(k, int((~special).sum()) - 1)
  if k_eff <= 0:
    return out
  for lo in range(0, size, chunk):
    sims = emb[lo:lo + chunk] @ emb.T
    sims[:, special] = -np.inf
    rows = np.arange(lo, min(lo + chunk, size))
    sims[rows - lo, rows] = -np.inf
    top = np.argpartition(-sims, k_eff, axis=1)[:, :k_eff]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    out[lo:lo + chunk, :k_eff] = np.take_along_axis(top, order, axis=1)
  out[special] = -1
  return out
