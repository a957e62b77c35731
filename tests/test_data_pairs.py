"""research.data.pairs: NSP / SOP rows, their labels, determinism, and the pipeline around them."""

import numpy as np
import pytest

from research import data
from research.config.data import DataConfig, TokenizerConfig
from research.data import pairs
from research.data.documents import TokenizedSplit

CLS, SEP, PAD = 2, 3, 0
BASE = 100  # sentence i is made of token BASE + i, so every token names its sentence


def _split(n=60, seed=0):
  rng = np.random.default_rng(seed)
  docs = [np.array([BASE + i] * int(rng.integers(2, 9)) + [SEP], np.int32) for i in range(n)]
  starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
  tokens = np.concatenate(docs)
  return TokenizedSplit(tokens, starts.astype(np.int64), np.zeros(len(tokens), bool))


def _spec(mode, seed=0):
  return pairs.PairSpec(mode, CLS, SEP, PAD, seed)


def _sentences(tokens):
  return [int(t) - BASE for t in tokens]


@pytest.mark.parametrize("mode", ["nsp", "sop"])
def test_rows_are_cls_a_sep_b_sep_with_token_types(mode):
  split = _split()
  batch = pairs.gather(split, np.arange(40), split.doc_lengths[:40], 24, _spec(mode), epoch=0)
  for ids, types, seg in zip(batch["input_ids"], batch["token_type_ids"], batch["segment_ids"]):
    n = int(seg.sum())
    assert ids[0] == CLS and ids[n - 1] == SEP and (ids[n:] == PAD).all() and not seg[n:].any()
    first_sep = int(np.flatnonzero(ids == SEP)[0])
    assert (ids == SEP).sum() == 2 and 1 < first_sep < n - 2
    assert (types[:first_sep + 1] == 0).all() and (types[first_sep + 1:n] == 1).all()
    assert (types[n:] == 0).all() and n <= 24


def test_nsp_labels_say_whether_b_follows_a():
  split = _split(200)
  labels = []
  for anchor in range(150):
    a, b, label = pairs.make_pair(split, anchor, 20, _spec("nsp"), epoch=0)
    sa, sb = _sentences(a), _sentences(b)
    assert sa == sorted(sa) and sb == sorted(sb)  # each side is consecutive sentences
    follows = sb[0] == sa[-1] + 1
    assert follows == (label == 0), (anchor, sa, sb, label)
    labels.append(label)
  assert 0.4 < np.mean(labels) < 0.6


def test_sop_labels_say_whether_the_segments_are_swapped():
  split = _split(200)
  labels = []
  for anchor in range(150):
    a, b, label = pairs.make_pair(split, anchor, 20, _spec("sop"), epoch=0)
    sa, sb = _sentences(a), _sentences(b)
    if label == 0:
      assert sb[0] == sa[-1] + 1  # A then B, as in the text
    else:
      assert sa[0] == sb[-1] + 1  # B's text comes first
    labels.append(label)
  assert 0.4 < np.mean(labels) < 0.6


def test_truncation_keeps_the_junction_and_the_budget():
  a, b = pairs._truncate(np.arange(10), np.arange(100, 103), 8)
  assert a.tolist() == [5, 6, 7, 8, 9] and b.tolist() == [100, 101, 102]
  a, b = pairs._truncate(np.arange(5), np.arange(100, 105), 7)
  assert a.tolist() == [1, 2, 3, 4] and b.tolist() == [100, 101, 102]


def test_pairs_depend_on_seed_epoch_and_anchor_only():
  split = _split()
  rows = lambda seed, epoch, anchors: pairs.gather(
      split, anchors, np.ones(len(anchors), int), 24, _spec("nsp", seed), epoch)
  same = rows(0, 1, np.arange(20))
  np.testing.assert_array_equal(same["input_ids"][5], rows(0, 1, np.array([5]))["input_ids"][0])
  assert not np.array_equal(same["input_ids"], rows(0, 2, np.arange(20))["input_ids"])
  assert not np.array_equal(same["input_ids"], rows(1, 1, np.arange(20))["input_ids"])


def test_dataset_builds_pairs_from_a_files_lines_and_resumes(tmp_path):
  text = "".join(f"line number {i} says {'ab' * (i % 5 + 1)}\n\n" for i in range(120))
  (tmp_path / "lines.txt").write_text(text)
  cfg = DataConfig(path=str(tmp_path / "lines.txt"), seq_len=48, batch_size=8, pack=False,
                   split_lines=True, pairs="sop", cache_dir=str(tmp_path / "cache"),
                   tokenizer=TokenizerConfig(kind="char", special_tokens=(
                       "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")))
  ds = data.build(cfg)
  assert ds.train.num_docs == 108 and ds.val.num_docs == 12  # one document per non-empty line
  it = ds.train_iterator()
  batch = next(it)
  assert set(batch) == {"input_ids", "token_type_ids", "segment_ids", "pair_label"}
  assert (batch["input_ids"][:, 0] == ds.tokenizer.cls_id).all()
  for _ in range(20):  # into the next epoch
    next(it)
  state = it.state()
  expected = next(it)
  resumed = next(ds.train_iterator(state=state))
  for key in expected:
    np.testing.assert_array_equal(resumed[key], expected[key])
  evals = list(ds.eval_batches())
  assert sum(int(b["segment_ids"][:, 0].sum()) for b in evals) == 12


def test_pair_configs_are_validated(tmp_path):
  with pytest.raises(ValueError, match="set DataConfig.pack=False"):
    DataConfig(pairs="nsp")
  with pytest.raises(ValueError, match="DataConfig.pairs='mlm' is not allowed"):
    DataConfig(pairs="mlm", pack=False)
  cfg = DataConfig(dataset="copy", pairs="nsp", pack=False, seq_len=32, batch_size=4,
                   cache_dir=str(tmp_path),
                   tokenizer=TokenizerConfig(kind="char", special_tokens=("[PAD]", "[SEP]")))
  with pytest.raises(ValueError, match=r"needs \[CLS\] and \[SEP\] tokens"):
    data.build(cfg)
  (tmp_path / "one.txt").write_text("a single line")
  with pytest.raises(ValueError, match="at least two documents"):
    data.build(DataConfig(path=str(tmp_path / "one.txt"), pairs="nsp", pack=False,
                          batch_size=1, cache_dir=str(tmp_path), tokenizer=TokenizerConfig(
                              kind="char", special_tokens=("[PAD]", "[CLS]", "[SEP]"))))
