"""Supervised fine-tuning: prompt/response documents, the response-only loss mask, JSONL input,
templates, the sft objective and its exact-match metric."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from research import data
from research.config import overrides, registry as configs
from research.config.data import DataConfig, TokenizerConfig
from research.data import prompt_response
from research.inference.generate import generate
from research.inference.sampling import SamplingConfig
from research.models import registry
from research.train import objectives
from support import forward, tiny

SEP_TOKENS = TokenizerConfig(kind="char", special_tokens=("<pad>", "<s>", "</s>", "<sep>"))
PAIRS = [("ab", "xyz"), ("c", "w"), ("dd", "uv"), ("e", "ttt")]


def _jsonl(tmp_path, records, name="pairs.jsonl"):
  tmp_path.mkdir(parents=True, exist_ok=True)
  path = tmp_path / name
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return path


def _dataset(tmp_path, records=PAIRS, **kwargs):
  path = _jsonl(tmp_path, [{"prompt": p, "response": r} for p, r in records])
  options = dict(path=str(path), tokenizer=SEP_TOKENS, seq_len=10, batch_size=4, pack=False,
                 loss_on="answer", val_fraction=0.0, cache_dir=str(tmp_path / "cache"))
  options.update(kwargs)
  return data.build(DataConfig(**options))


def _scored(tok, batch, row):
  """The weighted targets of a row, decoded, and the inputs they follow."""
  w = batch["loss_mask"][row] > 0
  return tok.decode(batch["targets"][row][w]), tok.decode(batch["input_ids"][row][w])


def test_loss_covers_the_response_from_after_the_separator_through_eos(tmp_path):
  ds = _dataset(tmp_path)
  tok = ds.tokenizer
  batch = next(ds.train_iterator())
  rows = {tok.decode(r[(s > 0)]): i for i, (r, s) in enumerate(zip(batch["input_ids"], batch["segment_ids"]))}
  row = rows["<s>ab<sep>xyz"]
  targets, inputs = _scored(tok, batch, row)
  # Weighted: x y z and the EOS; the first of them is predicted from the separator.
  assert targets == "xyz</s>" and inputs == "<sep>xyz"
  # Prompt, separator and padding targets weigh nothing; the EOS weighs one.
  t = batch["targets"][row]
  w = batch["loss_mask"][row]
  assert w[t == tok.sep_id].sum() == 0 and w[t == tok.eos_id].sum() == 1
  assert w[batch["segment_ids"][row] == 0].sum() == 0 and (batch["segment_ids"][row] == 0).any()
  assert w.sum() == 4


def test_packed_rows_keep_each_pairs_mask(tmp_path):
  for cross in (False, True):
    ds = _dataset(tmp_path / str(cross), pack=True, seq_len=12, batch_size=1, cross_document_attention=cross)
    tok = ds.tokenizer
    batch = ds.layout.gather(ds.train, np.array([0]), np.array([13]))
    ids, w, seg = batch["input_ids"][0], batch["loss_mask"][0], batch["segment_ids"][0]
    assert tok.decode(ids) == "<s>ab<sep>xyz</s><s>c<sep>w"
    assert tok.decode(batch["targets"][0][w > 0]) == "xyz</s>w</s>"
    # Segment ids separate the pairs (attention stays inside each) unless cross-document
    # attention is asked for; the masks are the same either way.
    expected = [1] * 8 + [2] * 4 if not cross else [1] * 12
    np.testing.assert_array_equal(seg, expected)


def test_chat_template_with_special_symbols(tmp_path):
  tokens = TokenizerConfig(kind="char", special_tokens=("<pad>", "<s>", "</s>", "<|user|>", "<|bot|>"))
  ds = _dataset(tmp_path, tokenizer=tokens, template="<|user|>{prompt}\n<|bot|>{response}.", seq_len=16)
  tok = ds.tokenizer
  doc = ds.train.tokens[:ds.train.doc_starts[1]]
  assert tok.decode(doc) == "<s><|user|>ab\n<|bot|>xyz.</s>"
  assert tok.special_tokens()["<|bot|>"] in doc.tolist()  # a symbol is one token, not characters
  answer = ds.train.answer[:ds.train.doc_starts[1]]
  assert tok.decode(doc[answer]) == "xyz.</s>"


def test_templates_are_checked(tmp_path):
  for template, needle in (("{response}{prompt}", "must come before"), ("{prompt}", "exactly once"),
                           ("{prompt}{mask}{response}", "unknown placeholder {mask}")):
    with pytest.raises(ValueError, match=needle):
      DataConfig(template=template)
  # The default JSONL template needs a separator token; the message says how to add one.
  with pytest.raises(ValueError, match=r"uses \{sep\}, but the tokenizer has no sep token.*<sep>"):
    _dataset(tmp_path, tokenizer=TokenizerConfig(kind="char"))


@pytest.mark.parametrize("line,needle", [
    ('{"prompt": "a", "response": "b"', "line 2: not valid JSON"),
    ('["a", "b"]', "line 2: expected a JSON object"),
    ('{"prompt": "a"}', "line 2: no 'response' field"),
    ('{"prompt": 3, "response": "b"}', "line 2: field 'prompt' must be a string, got int"),
    ('{"prompt": "a", "response": ""}', "line 2: field 'response' is empty"),
])
def test_malformed_jsonl_names_the_line(tmp_path, line, needle):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"prompt": "q", "response": "r"}\n' + line + "\n")
  with pytest.raises(ValueError, match=needle):
    prompt_response.read_jsonl(path)


def test_jsonl_fields_and_split(tmp_path):
  path = _jsonl(tmp_path, [{"q": f"p{i}", "a": f"r{i}", "extra": i} for i in range(10)])
  (tmp_path / "empty.jsonl").write_text("\n\n")
  with pytest.raises(ValueError, match="holds no records"):
    prompt_response.read_jsonl(tmp_path / "empty.jsonl")
  ds = data.build(DataConfig(path=str(path), prompt_field="q", response_field="a", tokenizer=SEP_TOKENS,
                             seq_len=8, batch_size=2, pack=False, loss_on="answer", val_fraction=0.2,
                             cache_dir=str(tmp_path / "cache")))
  assert (ds.train.num_docs, ds.val.num_docs) == (8, 2)
  assert ds.tokenizer.decode(ds.val.tokens[:ds.val.doc_starts[1]]) == "<s>p8<sep>r8</s>"


def test_synthetic_tasks_keep_their_documents(tmp_path):
  # The default template of a synthetic task is prompt + response (the prompt ends in "=").
  cfg = DataConfig(dataset="copy", seq_len=32, batch_size=2, loss_on="answer",
                   cache_dir=str(tmp_path / "cache"))
  ds = data.build(cfg)
  doc = ds.train.tokens[:ds.train.doc_starts[1]]
  text = ds.tokenizer.decode(doc)
  prompt, response = text.removeprefix("<s>").removesuffix("</s>").split("=")
  assert prompt.startswith("copy ") and prompt[5:] == response
  assert ds.tokenizer.decode(doc[ds.train.answer[:len(doc)]]) == response + "</s>"


def test_response_exact_match_counts_runs():
  # Row 0 holds two responses (a packed row), row 1 one; row 2 starts with the end of a
  # response whose prompt was in the previous row, which is not counted. Vocabulary of 5.
  targets = np.array([[1, 2, 3, 4, 1, 2], [3, 3, 3, 0, 0, 0], [2, 2, 0, 1, 1, 0]])
  weights = np.array([[0, 1, 1, 0, 1, 1], [0, 1, 1, 0, 0, 0], [1, 1, 0, 0, 1, 0]], np.float32)
  predicted = targets.copy()
  predicted[0, 5] = 0  # the second response of row 0 has one wrong token
  predicted[1, 0] = 4  # a wrong prediction at an unscored position changes nothing
  logits = jax.nn.one_hot(predicted, 5)
  exact, count = objectives.response_exact_match(logits, targets, weights)
  assert (float(exact), float(count)) == (3.0, 4.0)
  predicted[2, 0] = 0  # wrong inside the uncounted run: still 3 of 4
  exact, count = objectives.response_exact_match(jax.nn.one_hot(predicted, 5), targets, weights)
  assert (float(exact), float(count)) == (3.0, 4.0)
  assert objectives.finalize_sft({"exact_match": 2.0 / 7, "responses": 3.0 / 7}) == {
      "exact_match": pytest.approx(2 / 3)}


def test_teacher_forced_exact_match_is_greedy_decoding():
  """A response is exact under teacher forcing exactly when greedy decoding produces it."""
  cfg = tiny()
  model = registry.build(cfg)
  params = registry.init_params(cfg, jax.random.key(3))
  prompt = np.asarray(jax.random.randint(jax.random.key(4), (3, 5), 0, cfg.vocab_size), np.int32)
  greedy = np.asarray(generate(model, params, prompt, sampling=SamplingConfig(
      max_new_tokens=4, temperature=0.0, stop_tokens=())))
  response = greedy.copy()
  response[1, 2] = (response[1, 2] + 1) % cfg.vocab_size  # not what greedy decoding says
  seq = np.concatenate([prompt, response], axis=1)
  weights = np.zeros((3, 8), np.float32)
  weights[:, 4:] = 1  # targets 5..8: the four response tokens
  logits = forward(cfg, params, seq[:, :-1])
  exact, count = objectives.response_exact_match(logits, seq[:, 1:], weights)
  assert (float(exact), float(count)) == (2.0, 3.0)


def test_sft_loss_is_the_response_cross_entropy():
  cfg = tiny()
  model = registry.build(cfg)
  params = registry.init_params(cfg, jax.random.key(0))
  ids = np.asarray(jax.random.randint(jax.random.key(1), (2, 9), 0, 97), np.int32)
  mask = np.zeros((2, 8), np.float32)
  mask[0, 5:] = 1
  mask[1, 2:4] = 1
  batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": mask,
           "segment_ids": np.ones((2, 8), np.int32)}
  loss, weight, metrics = jax.jit(lambda p, b: objectives.sft(model, p, b, None, deterministic=True))(
      params, batch)
  logp = np.asarray(jax.nn.log_softmax(forward(cfg, params, batch["input_ids"])))
  nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  assert float(weight) == 5.0
  assert float(loss) == pytest.approx((nll * mask).sum(), rel=1e-5)
  assert float(metrics["responses"]) == 2.0


def test_sft_config_needs_the_answer_mask_in_any_order():
  base = configs.get("smoke")
  for order in (["train.objective=sft", "data.loss_on=answer"], ["data.loss_on=answer", "train.objective=sft"]):
    assert overrides.apply(base, order).train.objective == "sft"
  with pytest.raises(ValueError, match="set data.loss_on=answer"):
    overrides.apply(base, ["train.objective=sft"])
