"""research.train.masking: BERT's 15/80/10/10, specials, static vs dynamic, whole words, MacBERT."""

import json

import numpy as np
import pytest

from research import tokenizers
from research.config.data import TokenizerConfig
from research.config.masking import MaskingConfig
from research.train import masking

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEXT = "the quick brown fox jumps over the lazy dog while zebras quietly vex jumpy kids\n"


@pytest.fixture(scope="module")
def chars():
  return tokenizers.build(TokenizerConfig(kind="char", special_tokens=BERT_SPECIALS), [TEXT])


def _rows(tok, n_rows=2000, seed=0):
  """[CLS] text [SEP] text [SEP] padding, with random lengths."""
  rng = np.random.default_rng(seed)
  normal = np.array([i for i in range(tok.vocab_size) if i not in tok.special_tokens().values()])
  ids = np.full((n_rows, 64), tok.pad_id, np.int32)
  segments = np.zeros_like(ids)
  for r in range(n_rows):
    a, b = rng.integers(5, 30, 2)
    row = [tok.cls_id, *rng.choice(normal, a), tok.sep_id, *rng.choice(normal, b), tok.sep_id]
    ids[r, :len(row)] = row
    segments[r, :len(row)] = 1
  return {"input_ids": ids, "segment_ids": segments}


def test_bert_statistics_are_15_80_10_10(chars):
  batch = _rows(chars)
  out = masking.mask_batch(batch, chars, MaskingConfig(), seed=0, epoch=0)
  ids, masked, chosen = batch["input_ids"], out["input_ids"], out["loss_mask"] > 0
  special = np.isin(ids, list(chars.special_tokens().values()))
  maskable = (batch["segment_ids"] > 0) & ~special
  assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.01
  to_mask = (masked == chars.mask_id) & chosen
  unchanged = (masked == ids) & chosen
  random = chosen & ~to_mask & ~unchanged
  n = chosen.sum()
  assert n > 10000
  for part, share in ((to_mask, 0.8), (random, 0.1), (unchanged, 0.1)):
    assert abs(part.sum() / n - share) < 0.01, (part.sum() / n, share)
  np.testing.assert_array_equal(out["targets"], ids)
  assert (masked[~chosen] == ids[~chosen]).all()


def test_special_tokens_are_never_selected_or_introduced(chars):
  batch = _rows(chars, 500)
  out = masking.mask_batch(batch, chars, MaskingConfig(select_prob=0.9, random_prob=0.2,
                                                       replace_prob=0.0), seed=1, epoch=0)
  specials = list(chars.special_tokens().values())
  special = np.isin(batch["input_ids"], specials)
  assert not (out["loss_mask"] > 0)[special].any()
  assert (out["input_ids"][special] == batch["input_ids"][special]).all()
  # Random replacements draw from ordinary tokens only.
  assert not np.isin(out["input_ids"][~special], specials).any()


def test_dynamic_masks_change_across_epochs_static_ones_do_not(chars):
  batch = _rows(chars, 50)
  for mode, same in (("static", True), ("dynamic", False)):
    cfg = MaskingConfig(mode=mode)
    e0 = masking.mask_batch(batch, chars, cfg, seed=0, epoch=0)
    e1 = masking.mask_batch(batch, chars, cfg, seed=0, epoch=1)
    assert np.array_equal(e0["loss_mask"], e1["loss_mask"]) == same, mode
    assert np.array_equal(e0["input_ids"], e1["input_ids"]) == same, mode
    # A row's mask does not depend on the rows around it (or the host that holds them).
    alone = masking.mask_batch({k: v[7:8] for k, v in batch.items()}, chars, cfg, seed=0, epoch=1)
    np.testing.assert_array_equal(alone["input_ids"][0], e1["input_ids"][7])
  other_seed = masking.mask_batch(batch, chars, MaskingConfig(mode="static"), seed=1, epoch=0)
  assert not np.array_equal(other_seed["loss_mask"], e0["loss_mask"])


def test_whole_word_masking_selects_every_piece_of_a_word():
  line = "unbelievably remarkable transformations happen regularly in wonderful gardens"
  tok = tokenizers.build(TokenizerConfig(kind="wordpiece", vocab_size=80), [(line + "\n") * 20])
  words = [tok.encode(w) for w in line.split()]
  assert max(len(w) for w in words) > 2  # words of several pieces
  rng = np.random.default_rng(0)
  rows, word_of = [], []
  for _ in range(300):  # distinct rows: equal rows would share one mask
    order = rng.permutation(len(words))
    rows.append([tok.cls_id] + [i for w in order for i in words[w]] + [tok.sep_id])
    word_of.append([-1] + [k for k, w in enumerate(order) for _ in words[w]] + [-1])
  ids, word_of = np.array(rows, np.int32), np.array(word_of)
  out = masking.mask_batch({"input_ids": ids, "segment_ids": np.ones_like(ids)}, tok,
                           MaskingConfig(whole_word=True), seed=0, epoch=0)
  chosen = out["loss_mask"] > 0
  for r in range(len(ids)):
    for k in range(len(words)):
      picked = chosen[r, word_of[r] == k]
      assert picked.all() or not picked.any()
  assert not chosen[:, [0, -1]].any()
  # Whole words are taken while the count stays <= 15%: a little under it on average.
  share = chosen.sum() / (ids.size - 2 * len(ids))
  assert 0.10 < share <= 0.15


def test_macbert_replaces_with_similar_tokens_from_a_table(chars, tmp_path):
  table = tmp_path / "similar.json"
  table.write_text(json.dumps({"a": ["e", "o"], "q": ["k"], "zz": ["x"]}))
  cfg = MaskingConfig(strategy="macbert", similar_table=str(table))
  # Distinct rows (equal rows would share one mask), mostly "a".
  rng = np.random.default_rng(0)
  a, b = chars.encode("ab")
  ids = np.where(rng.random((400, 40)) < 0.9, a, b).astype(np.int32)
  out = masking.mask_batch({"input_ids": ids}, chars, cfg, seed=0, epoch=0)
  chosen = (out["loss_mask"] > 0) & (ids == a)
  replaced = out["input_ids"][chosen]
  similar = np.isin(replaced, chars.encode("eo"))
  assert abs(similar.mean() - 0.8) < 0.02  # plus a random token that happens to be e or o
  assert not (replaced == chars.mask_id).any()  # MacBERT never shows [MASK]
  # A token with no similar entry falls back to a random one.
  others = (out["loss_mask"] > 0) & (ids == b) & (out["input_ids"] != b)
  assert others.sum() > 10 and not np.isin(out["input_ids"][others], [chars.mask_id]).any()


def test_macbert_neighbours_in_an_embedding_space(chars, tmp_path):
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(chars.vocab_size, 8)).astype(np.float32)
  a, e = chars.encode("ae")
  vectors[e] = vectors[a] + 1e-3  # e is a's nearest neighbour (and a is e's)
  excluded = np.isin(np.arange(chars.vocab_size), list(chars.special_tokens().values()))
  neighbours = masking.embedding_neighbours(vectors, excluded, k=1)
  assert neighbours[a, 0] == e and neighbours[e, 0] == a
  assert (neighbours[list(chars.special_tokens().values())] == -1).all()  # [UNK] too
  path = tmp_path / "emb.npy"
  np.save(path, vectors)
  cfg = MaskingConfig(strategy="macbert", similar_embeddings=str(path), similar_top_k=1,
                      replace_prob=1.0, random_prob=0.0)
  out = masking.mask_batch({"input_ids": np.array([[a] * 30] * 10, np.int32)}, chars, cfg,
                           seed=0, epoch=0)
  chosen = out["loss_mask"] > 0
  assert chosen.any() and (out["input_ids"][chosen] == e).all()


@pytest.mark.parametrize("changes, needle", [
    (dict(strategy="macbert"), "needs exactly one of MaskingConfig.similar_table"),
    (dict(similar_table="x.json"), "only applies to strategy='macbert'"),
    (dict(replace_prob=0.9, random_prob=0.2), "exceeds 1"),
    (dict(mode="once"), "MaskingConfig.mode='once' is not allowed"),
])
def test_masking_config_is_validated(changes, needle):
  with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
    MaskingConfig(**changes)
