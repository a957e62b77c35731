"""research.hf.checkpoint: sharded safetensors both ways, atomic writes, no pickles."""

import json

import jax
import numpy as np
import pytest
import transformers

import research.hf
from hf_support import (PARITY_TOL, hf_model, our_logits, padded_batch, reference_logits,
                        relative_error)
from research import presets
from research.hf import checkpoint
from research.models import registry

_SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2)


def test_sharded_transformers_checkpoint_loads(tmp_path):
  reference = hf_model("llama", **_SMALL)
  reference.save_pretrained(tmp_path, max_shard_size="40KB")
  assert (tmp_path / checkpoint.INDEX_FILE).is_file()
  assert len(list(tmp_path.glob("*.safetensors"))) > 2
  model, params = research.hf.load(tmp_path)
  ids, mask, positions = padded_batch(model.cfg.vocab_size)
  err = relative_error(our_logits(model, params, ids, mask, positions),
                       reference_logits(reference, ids, mask, positions), mask)
  assert err <= PARITY_TOL


@pytest.fixture(scope="module")
def small_model():
  cfg = presets.get("llama2-7b-smoke", vocab_size=128)
  return registry.build(cfg), registry.init_params(cfg, jax.random.key(0))


def test_save_shards_past_the_limit_and_transformers_loads_them(small_model, tmp_path):
  model, params = small_model
  path = research.hf.save(model, params, tmp_path / "out", max_shard_size="50KB")
  index = json.loads((path / checkpoint.INDEX_FILE).read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 2 and not (path / checkpoint.WEIGHTS_FILE).exists()
  tensors = checkpoint.Checkpoint(path)
  for shard in shards:
    in_shard = [n for n, f in index["weight_map"].items() if f == shard]
    size = sum(tensors.get(n).nbytes for n in in_shard)
    assert size <= 50_000 or len(in_shard) == 1
  _, info = transformers.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  _, loaded = research.hf.load(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_failed_save_leaves_nothing_behind(small_model, tmp_path, monkeypatch):
  model, params = small_model
  calls = []

  def failing_save_file(tensors, filename, metadata=None):
    calls.append(filename)
    if len(calls) == 2:
      raise OSError("disk full")
    checkpoint_save_file(tensors, filename, metadata=metadata)

  checkpoint_save_file = checkpoint.save_file
  monkeypatch.setattr(checkpoint, "save_file", failing_save_file)
  with pytest.raises(OSError, match="disk full"):
    research.hf.save(model, params, tmp_path / "out", max_shard_size="50KB")
  assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_weights_and_keeps_other_files(small_model, tmp_path):
  model, params = small_model
  path = tmp_path / "out"
  research.hf.save(model, params, path, max_shard_size="50KB")
  (path / "tokenizer.json").write_text("{}")
  with pytest.raises(FileExistsError):
    research.hf.save(model, params, path)
  research.hf.save(model, params, path, overwrite=True)
  names = sorted(p.name for p in path.iterdir())
  assert names == ["config.json", "model.safetensors", "tokenizer.json"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_pickled_weights_are_refused_with_the_way_out(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **_SMALL}))
  (tmp_path / "pytorch_model.bin").write_bytes(b"not opened")
  with pytest.raises(research.hf.ConversionError,
                     match=r"pytorch_model\.bin.*arbitrary code.*save_pretrained"):
    research.hf.load(tmp_path)


def test_a_directory_without_config_is_refused(tmp_path):
  with pytest.raises(research.hf.ConversionError, match="config.json"):
    research.hf.load(tmp_path)


@pytest.mark.parametrize("size, expected", [
    (1234, 1234), ("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("10KiB", 10240), ("1.5kb", 1500)])
def test_parse_size(size, expected):
  assert checkpoint.parse_size(size) == expected


def test_parse_size_refuses_nonsense():
  with pytest.raises(ValueError, match="max_shard_size"):
    checkpoint.parse_size("lots")
