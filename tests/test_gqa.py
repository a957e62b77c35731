"""Multi-head to grouped-/multi-query conversion (research.gqa): mean-pooled K/V heads, the
same function when a group's heads are identical, and uptraining from the converted run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import checkpoint, gqa, pretrained
from research.models import registry
from research.train import __main__ as cli
from research.train import loop
from support import forward, random_ids, tiny


def _kv_leaves(params):
  """(path, leaf) of every K/V projection parameter."""
  return [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
          if any(getattr(k, "key", None) in ("k", "v") for k in path)]


def _groups_made_identical(params, groups: int):
  """`params` with every K/V head replaced by the first head of its group."""

  def same(path, x):
    if not any(getattr(k, "key", None) in ("k", "v") for k in path):
      return x
    *lead, k, h = x.shape
    first = x.reshape(*lead, groups, k // groups, h)[..., :1, :]
    return jnp.broadcast_to(first, (*lead, groups, k // groups, h)).reshape(x.shape)

  return jax.tree_util.tree_map_with_path(same, params)


@pytest.mark.parametrize("n_kv,new,overrides", [
    (4, 2, {}),                                          # MHA -> GQA, scanned layers
    (4, 1, {"scan_layers": False, "qkv_bias": True}),    # MHA -> MQA, looped layers, K/V biases
    (2, 1, {"position": "learned"}),                     # GQA -> MQA
])
def test_identical_heads_in_a_group_convert_to_the_same_model(n_kv, new, overrides):
  cfg = tiny(n_kv_heads=n_kv, **overrides)
  params = _groups_made_identical(registry.init_params(cfg, jax.random.key(0)), new)
  ids = random_ids((2, 16))
  new_cfg, converted = gqa.convert(cfg, params, new)
  assert new_cfg.num_kv_heads == new and new_cfg.replace(n_kv_heads=n_kv) == cfg
  assert jax.tree.map(jnp.shape, converted) == jax.tree.map(jnp.shape, registry.param_shapes(new_cfg))
  np.testing.assert_allclose(forward(new_cfg, converted, ids),
                             forward(cfg, params, ids), atol=2e-5, rtol=1e-5)


def test_each_new_head_is_the_mean_of_its_group():
  cfg = tiny(n_heads=4, qkv_bias=True)
  params = registry.init_params(cfg, jax.random.key(1))
  _, converted = gqa.convert(cfg, params, 2)
  for (path, before), (_, after) in zip(_kv_leaves(params), _kv_leaves(converted)):
    before, after = np.asarray(before), np.asarray(after)
    # Query heads 0, 1 read new head 0; query heads 2, 3 read new head 1.
    np.testing.assert_allclose(after[..., 0, :], (before[..., 0, :] + before[..., 1, :]) / 2, rtol=1e-6)
    np.testing.assert_allclose(after[..., 1, :], (before[..., 2, :] + before[..., 3, :]) / 2, rtol=1e-6)
  # Everything else is untouched.
  np.testing.assert_array_equal(converted["embed"]["tokens"]["embedding"],
                                params["embed"]["tokens"]["embedding"])
  with pytest.raises(ValueError, match="n_kv_heads=3 must divide the model's 4 K/V heads"):
    gqa.convert(cfg, params, 3)


def test_a_hugging_face_llama_converts_as_pooling_its_projections_would(tmp_path):
  """Converting an imported transformers LLaMA is the same model as transformers' own GQA
  LLaMA whose k_proj/v_proj rows are mean-pooled per group by hand; write_start takes it too."""
  import torch

  import research.hf
  from hf_support import (PARITY_TOL, hf_model, our_logits, padded_batch, reference_logits,
                          relative_error)

  small = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4)
  mha = hf_model("llama", num_key_value_heads=4, **small)
  mha.save_pretrained(tmp_path / "mha")
  model, params = research.hf.load(tmp_path / "mha")
  cfg, converted = gqa.convert(model.cfg, params, 2)

  pooled = hf_model("llama", num_key_value_heads=2, **small)
  state = mha.state_dict()
  for name, weight in state.items():
    if name.endswith(("k_proj.weight", "v_proj.weight")):  # [K * H, D] -> groups of 2 heads
      state[name] = weight.reshape(2, 2, -1, weight.shape[-1]).mean(dim=1).reshape(-1, weight.shape[-1])
  pooled.load_state_dict(state)
  ids, mask, positions = padded_batch(cfg.vocab_size)
  with torch.no_grad():
    expected = reference_logits(pooled, ids, mask, positions)
  ours = our_logits(registry.build(cfg), converted, ids, mask, positions)
  assert relative_error(ours, expected, mask) < PARITY_TOL

  start = gqa.write_start(tmp_path / "mha", tmp_path / "start", n_kv_heads=2)
  config, _, start_params = pretrained.restore(start)
  assert config.model.num_kv_heads == 2
  jax.tree.map(np.testing.assert_array_equal, start_params, converted)


QUIET = ["train.progress=false", "train.sample_tokens=0", "mesh.data=1", "train.tensorboard=false",
         "train.eval_batches=1", "train.eval_every=0", "data.dataset=copy", "data.seq_len=32",
         "data.batch_size=4", "train.async_checkpoint=false"]


def _train(workdir, *overrides, config="smoke"):
  cfg = cli.parse(["--config", str(config), "--workdir", str(workdir), *QUIET, *overrides])[0]
  return loop.train(cfg, workdir)


def test_uptraining_starts_from_the_converted_parameters(tmp_path):
  source = tmp_path / "mha"
  _train(source, "train.steps=2", "train.checkpoint_every=2", "model.n_layers=1", "model.d_model=32")
  start = gqa.write_start(source, tmp_path / "gqa-start", n_kv_heads=2)
  config, _, start_params = pretrained.restore(start)
  assert config.model.num_kv_heads == 2 and (start / "tokenizer").is_dir()
  _, _, mha_params = pretrained.restore(source)
  expected = gqa.convert(checkpoint.read_config(source).model, mha_params, 2)[1]
  jax.tree.map(np.testing.assert_array_equal, start_params, expected)

  # Uptrain one step at a negligible learning rate: the run began at the converted parameters.
  run = tmp_path / "uptrained"
  _train(run, "train.steps=1", f"train.init_from={start}", "optimizer.lr=1e-9",
         "optimizer.warmup_steps=0", config=start / "config.json")
  uptrained = pretrained.load(run)
  assert uptrained.model_cfg.num_kv_heads == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), uptrained.params, expected)
  with pytest.raises(FileExistsError):
    gqa.write_start(source, start, n_kv_heads=2)
