"""python -m research.generate on a tiny trained run and on a Hugging Face directory."""

import json

import jax
import numpy as np
import pytest

from research import hf, pretrained, tokenizers
from research.config.data import TokenizerConfig
from research.generate import main
from research.inference.generate import generate, left_pad
from research.inference.sampling import SamplingConfig
from research.models import registry
from research.train import __main__ as train_cli
from research.train import loop
from support import tiny

QUIET = ["train.progress=false", "train.sample_tokens=0", "mesh.data=1", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = train_cli.parse(["--config", "smoke", "--workdir", str(workdir), "train.steps=2",
                            "train.checkpoint_every=2", *QUIET])[0]
  loop.train(config, workdir)
  return workdir


def _json_lines(out: str):
  return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_generate_from_a_run_equals_greedy_generation(run_dir, capsys, tmp_path):
  prompts = ["copy ab=", "mod 97: 1+2="]
  assert main(["--run", str(run_dir), "--prompt", prompts[0], "--prompt", prompts[1],
               "--max-new-tokens", "6", "--json"]) == 0
  records = _json_lines(capsys.readouterr().out)
  assert [r["prompt"] for r in records] == prompts

  # Reference: restore the run by hand and decode greedy tokens with the contiguous cache.
  config, model, params = pretrained.restore(run_dir)
  tok = tokenizers.load(run_dir / "tokenizer")
  ids = [[tok.bos_id] + tok.encode(p) for p in prompts]
  padded, mask = left_pad(ids)
  out = np.asarray(generate(model, params, padded, mask, SamplingConfig(
      max_new_tokens=6, stop_tokens=(tok.eos_id,), pad_id=-1, vocab_limit=tok.vocab_size)))
  expected = [tok.decode([t for t in row if t >= 0 and t != tok.eos_id]) for row in out]
  assert [r["completion"] for r in records] == expected

  # A prompts file, the contiguous engine, sampling flags: same format, seeded.
  path = tmp_path / "prompts.txt"
  path.write_text("copy ab=\n\nrecall a1 ?a=\n")
  sampled = ["--run", str(run_dir), "--prompts-file", str(path), "--max-new-tokens", "5", "--json",
             "--temperature", "0.8", "--top-k", "10", "--top-p", "0.9", "--repetition-penalty", "1.2",
             "--seed", "3"]
  main(sampled + ["--engine", "contiguous"])
  contiguous = _json_lines(capsys.readouterr().out)
  main(sampled + ["--attention-impl", "chunked"])
  paged = _json_lines(capsys.readouterr().out)
  assert [r["prompt"] for r in paged] == ["copy ab=", "recall a1 ?a="]
  assert paged == contiguous


def test_generate_from_a_hugging_face_directory(tmp_path, capsys):
  tok = tokenizers.build(TokenizerConfig(kind="char"), ["hello world, the quick brown fox"])
  cfg = tiny(vocab_size=tok.vocab_size, init_std=0.3)
  model, params = registry.build(cfg), registry.init_params(cfg, jax.random.key(0))
  hf.save(model, params, tmp_path / "hf")
  tok.save(tmp_path / "hf")
  main(["--hf", str(tmp_path / "hf"), "--prompt", "hello", "--max-new-tokens", "7"])
  out = capsys.readouterr().out
  tokens = np.asarray(generate(model, params, np.array([tok.encode("hello")], np.int32), sampling=SamplingConfig(
      max_new_tokens=7, stop_tokens=(tok.eos_id,), pad_id=-1, vocab_limit=tok.vocab_size)))[0]
  assert out.startswith("hello" + tok.decode([t for t in tokens if t >= 0 and t != tok.eos_id]) + "\n")


def test_generate_arguments_are_checked(capsys):
  with pytest.raises(SystemExit):
    main(["--run", "x"])
  assert "at least one --prompt" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    main(["--run", "x", "--hf", "y", "--prompt", "a"])
  with pytest.raises(SystemExit):
    main(["--hf", "y", "--step", "3", "--prompt", "a"])
  assert "--step applies to --run only" in capsys.readouterr().err
