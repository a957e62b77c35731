"""research.data.build: sources to batches, the token cache, splits, resume, hosts."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.error
import urllib.request

import numpy as np
import pytest

from research import data, tokenizers
from research.config.data import DataConfig, SyntheticConfig, TokenizerConfig
from research.data import synthetic
from tests.text_samples import corpus

SHAKESPEARE = pathlib.Path(os.environ.get("RESEARCH_DATA_DIR", "/nonexistent"),
                           "tinyshakespeare.txt")
needs_corpus = pytest.mark.skipif(not SHAKESPEARE.is_file(),
                                  reason="RESEARCH_DATA_DIR holds no tinyshakespeare.txt")
SMALL_TASKS = SyntheticConfig(num_examples=600, min_len=2, max_len=6)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise urllib.error.URLError("network disabled in tests")

  monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def text_file(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text(corpus(), encoding="utf-8")
  return path


def config(tmp_path, **kwargs) -> DataConfig:
  return DataConfig(cache_dir=str(tmp_path / "cache"), **kwargs)


def batches_equal(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


@needs_corpus
def test_tinyshakespeare_split_is_two_contiguous_regions(tmp_path):
  ds = data.build(config(tmp_path, seq_len=64, batch_size=8))
  tok = ds.tokenizer
  assert tok.vocab_size == 65 + 3
  ids = tok.encode_array(SHAKESPEARE.read_text())
  cut = len(ids) - round(0.1 * len(ids))
  # Training is the first 90% after a BOS, validation the rest before an EOS: disjoint.
  np.testing.assert_array_equal(ds.train.tokens, np.r_[tok.bos_id, ids[:cut]])
  np.testing.assert_array_equal(ds.val.tokens, np.r_[ids[cut:], tok.eos_id])
  assert (ds.train_tokens, ds.val_tokens) == (cut + 1, len(ids) - cut + 1)
  batch = next(ds.train_iterator())
  assert np.all(batch["segment_ids"] == 1) and np.all(batch["loss_mask"] == 1)
  # Windows of 65 tokens overlapping by one: about train_tokens / 64 rows an epoch.
  assert abs(ds.steps_per_epoch() - ds.train_tokens / 64 / 8) <= 1


def test_offline_without_a_copy_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.delenv("RESEARCH_DATA_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="RESEARCH_DATA_DIR") as info:
    data.build(config(tmp_path))
  assert str(tmp_path / "cache" / "datasets" / "tinyshakespeare.txt") in str(info.value)


def test_a_local_file_round_trips_through_the_pipeline(tmp_path, text_file):
  cfg = config(tmp_path, path=str(text_file), seq_len=32, batch_size=4,
               tokenizer=TokenizerConfig(kind="sentencepiece_bpe", vocab_size=500))
  ds = data.build(cfg)
  tok = ds.tokenizer
  assert ds.train.tokens[0] == tok.bos_id and ds.val.tokens[-1] == tok.eos_id
  text = tok.decode(ds.train.tokens[1:]) + tok.decode(ds.val.tokens[:-1])
  assert text == corpus()


def test_second_build_reads_the_cache_and_tokenizes_nothing(tmp_path, text_file, monkeypatch):
  cfg = config(tmp_path, path=str(text_file), seq_len=16, batch_size=4)
  first = data.build(cfg)
  assert not first.from_cache

  def forbidden(*args, **kwargs):
    raise AssertionError("tokenized or trained again")

  monkeypatch.setattr(tokenizers.CharTokenizer, "encode_array", forbidden)
  monkeypatch.setitem(tokenizers.TRAINERS, "char", forbidden)
  second = data.build(cfg)
  assert second.from_cache and second.key == first.key
  assert batches_equal([next(first.train_iterator())], [next(second.train_iterator())])
  monkeypatch.undo()
  # A different tokenizer config is a different tokenizer, so new tokens.
  other = data.build(cfg.replace(tokenizer=TokenizerConfig(special_tokens=("<pad>", "</s>"))))
  assert not other.from_cache and other.key != first.key
  # So is a different source text.
  text_file.write_text(corpus(2), encoding="utf-8")
  changed = data.build(cfg)
  assert not changed.from_cache and changed.key != first.key


def test_builds_are_deterministic_and_the_seed_orders(tmp_path):
  cfg = config(tmp_path, dataset="synthetic_mix", synthetic=SMALL_TASKS, seq_len=32,
               batch_size=4)
  a = data.build(cfg)
  b = data.build(cfg.replace(cache_dir=str(tmp_path / "elsewhere")))
  take = lambda ds, n=6: [next(it) for it in [ds.train_iterator()] for _ in range(n)]
  assert batches_equal(take(a), take(b))
  assert batches_equal(list(a.eval_batches()), list(b.eval_batches()))
  c = data.build(cfg.replace(seed=1))
  assert c.key == a.key  # same tokens ...
  assert not batches_equal(take(a), take(c))  # ... in another order
  with pytest.raises(ValueError, match="other data or ordering"):
    c.train_iterator(state=a.train_iterator().state())


def test_resume_through_json_at_dataset_level(tmp_path):
  ds = data.build(config(tmp_path, dataset="copy", synthetic=SMALL_TASKS, seq_len=32,
                         batch_size=8))
  steps = ds.steps_per_epoch()
  it = ds.train_iterator()
  for _ in range(steps - 1):
    next(it)
  state = json.dumps(it.state())
  expected = [next(it) for _ in range(3)]  # crosses into epoch 1
  resumed = ds.train_iterator(state=json.loads(state))
  assert batches_equal([next(resumed) for _ in range(3)], expected)


def test_hosts_together_load_the_global_batch(tmp_path):
  ds = data.build(config(tmp_path, dataset="synthetic_mix", synthetic=SMALL_TASKS,
                         seq_len=32, batch_size=8))
  whole = next(ds.train_iterator())
  parts = [next(ds.train_iterator(process_index=p, process_count=2)) for p in range(2)]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_answer_only_loss_covers_exactly_the_answers(tmp_path):
  ds = data.build(config(tmp_path, dataset="synthetic_mix", synthetic=SMALL_TASKS,
                         seq_len=64, batch_size=8, pack=False, loss_on="answer"))
  tok = ds.tokenizer
  rows = 0
  for batch in ds.eval_batches():
    for ids, targets, mask, seg in zip(batch["input_ids"], batch["targets"],
                                       batch["loss_mask"], batch["segment_ids"]):
      if not seg.any():
        continue  # a padding row of the last batch
      rows += 1
      text = tok.decode(ids[seg > 0])
      answer = tok.decode(targets[mask > 0])
      assert text.startswith("<s>") and answer.endswith("</s>")
      prompt = text[len("<s>"):len(text) - len(answer) + len("</s>")]
      example = synthetic.Example(prompt, answer[:-len("</s>")], _task_of(prompt))
      assert synthetic.solve(example) == example.response
  assert rows == ds.val.num_docs == 60


def _task_of(prompt: str) -> str:
  return {"copy": "copy", "reca": "associative_recall", "mod ": "modular_arithmetic"}[prompt[:4]]


def test_packed_segments_start_at_each_bos(tmp_path):
  ds = data.build(config(tmp_path, dataset="synthetic_mix", synthetic=SMALL_TASKS,
                         seq_len=48, batch_size=4))
  batch = next(ds.train_iterator())
  bos = ds.tokenizer.bos_id
  for ids, seg, mask, targets in zip(batch["input_ids"], batch["segment_ids"],
                                     batch["loss_mask"], batch["targets"]):
    new_segment = np.diff(seg) != 0
    np.testing.assert_array_equal(new_segment, ids[1:] == bos)
    assert seg[0] == 1 and np.all(np.diff(seg) >= 0)
    # Only the target that starts the next document carries no loss.
    np.testing.assert_array_equal(mask == 0, targets == bos)


def test_kind_file_uses_a_saved_tokenizer(tmp_path, text_file):
  trained = tokenizers.build(TokenizerConfig(kind="bytelevel_bpe", vocab_size=400), [corpus()])
  trained.save(tmp_path / "tok")
  ds = data.build(config(tmp_path, path=str(text_file), seq_len=32, batch_size=4,
                         tokenizer=TokenizerConfig(kind="file", path=str(tmp_path / "tok"))))
  assert ds.tokenizer.fingerprint() == trained.fingerprint()
  assert ds.train.tokens[1:6].tolist() == trained.encode(corpus())[:5]


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss_on="answer"), r"loss_on='answer' needs a question/answer source"),
    (dict(pack=False), r"longest document has \d+ tokens .* seq_len \+ 1 = 17"),
    (dict(batch_size=100000), r"fewer than DataConfig.batch_size=100000"),
])
def test_impossible_layouts_are_errors(tmp_path, text_file, kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.build(config(tmp_path, path=str(text_file), seq_len=16, **{"batch_size": 4, **kwargs}))


def test_unknown_sources_are_errors(tmp_path):
  with pytest.raises(ValueError, match="dataset='shakespear' is not allowed; choose one of: "
                                       "'tinyshakespeare', 'copy'"):
    data.build(config(tmp_path, dataset="shakespear"))
  with pytest.raises(FileNotFoundError, match="no such file"):
    data.build(config(tmp_path, path=str(tmp_path / "missing.txt")))
