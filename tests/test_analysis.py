"""research.analysis: captured intermediates in layer order, per-layer statistics, the logit
lens (its last layer is the model's output), loading runs and HF checkpoints, plots."""

import functools

import jax
import numpy as np
import pytest

from research import analysis, hf
from research.config import overrides, registry as experiments
from research.config.model import ModelConfig
from research.layers.stack import unstack_layers
from research.models import registry
from research.train import loop

CFG = ModelConfig(vocab_size=48, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)
B, T = 2, 7


@functools.lru_cache(maxsize=None)
def _params(cfg):
  return registry.init_params(cfg, jax.random.key(0))


def _forward(model, params, ids):
  """The model's logits, jitted (un-jitted, every op would compile on its own)."""
  return jax.jit(lambda p, x: model.apply({"params": p}, input_ids=x))(params, ids)


def _ids():
  ids = np.random.default_rng(0).integers(3, CFG.vocab_size, (B, T)).astype(np.int32)
  mask = np.ones((B, T), np.int32)
  mask[1, :2] = 0  # left padding on the second row
  return ids, mask


def _trace(cfg):
  ids, mask = _ids()
  return analysis.capture(registry.build(cfg), _params(cfg), ids, mask)


@pytest.mark.parametrize("cfg,moe_layers", [
    (CFG, ()),
    (CFG.replace(n_layers=4, moe_experts=2, moe_top_k=1, moe_every=2), (1, 3)),
], ids=["dense", "moe_every_2"])
def test_capture_returns_every_layer_with_its_shape(cfg, moe_layers):
  trace = _trace(cfg)
  L, N, D, F = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.ffn_hidden
  assert trace.embeddings.shape == (B, T, D)
  assert trace.residual.shape == (L, B, T, D) and trace.stream.shape == (L + 1, B, T, D)
  assert trace.attention_probs.shape == (L, B, N, T, T)
  assert [h is None for h in trace.ffn_hidden] == [i in moe_layers for i in range(L)]
  assert all(h.shape == (B, T, F) for h in trace.ffn_hidden if h is not None)
  assert trace.final_hidden.shape == (B, T, D) and trace.logits.shape == (B, T, cfg.vocab_size)
  # Attention rows are distributions over the visible keys (causal, padding excluded); a
  # padding query sees no key and has no weights at all.
  probs = trace.attention_probs
  real = np.broadcast_to(_ids()[1][None, :, None, :] == 1, probs.shape[:-1])
  np.testing.assert_allclose(probs.sum(-1)[real], 1.0, atol=1e-5)
  assert np.all(probs.sum(-1)[~real] == 0)
  assert np.all(np.triu(probs[:, 0], k=1) == 0) and np.all(np.triu(probs[:, 1, :, 2:, 2:], k=1) == 0)
  assert np.all(probs[:, 1, :, 2:, :2] == 0)  # real queries never see the padding


@pytest.mark.parametrize("cfg", [CFG, CFG.replace(n_layers=4, moe_experts=2, moe_top_k=1, moe_every=2)],
                         ids=["dense", "moe_every_2"])
def test_scanned_and_looped_stacks_give_the_same_layers_in_order(cfg):
  ids, mask = _ids()
  scanned = analysis.capture(registry.build(cfg), _params(cfg), ids, mask)
  looped_cfg = cfg.replace(scan_layers=False)
  looped = analysis.capture(registry.build(looped_cfg), unstack_layers(_params(cfg)), ids, mask)
  np.testing.assert_allclose(looped.residual, scanned.residual, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(looped.attention_probs, scanned.attention_probs, atol=1e-6)
  # Each layer's output differs from the next: the order is real, not one layer repeated.
  assert not np.allclose(scanned.residual[0], scanned.residual[1])


@pytest.mark.parametrize("cfg", [
    CFG,                                                                      # pre-LN, final norm, tied
    CFG.replace(norm_placement="post", norm="layernorm", norm_bias=True),     # no final norm
    CFG.replace(tie_embeddings=False, norm_placement="sandwich"),             # lm_head
], ids=["pre_tied", "post", "sandwich_untied"])
def test_logit_lens_of_the_last_layer_is_the_models_output(cfg):
  trace = _trace(cfg)
  lens = analysis.logit_lens(trace, _params(cfg))
  assert lens.logits.shape == (cfg.n_layers + 1, B, T, cfg.vocab_size)
  np.testing.assert_allclose(lens.logits[-1], trace.logits, rtol=1e-5, atol=1e-5)
  assert lens.kl_to_final[-1] == pytest.approx(0.0, abs=1e-6)
  assert lens.kl_to_final[0] > 1e-4  # the embeddings alone predict something else
  assert lens.loss.shape == (cfg.n_layers + 1,)
  # The loss counts real next-token targets only: the final layer's equals a direct computation.
  ids, mask = _ids()
  logp = jax.nn.log_softmax(trace.logits, -1)
  nll = -np.take_along_axis(np.asarray(logp)[:, :-1], ids[:, 1:, None], -1)[..., 0]
  weight = mask[:, :-1] * mask[:, 1:]
  assert lens.loss[-1] == pytest.approx((nll * weight).sum() / weight.sum(), rel=1e-5)
  np.testing.assert_array_equal(lens.top_tokens[-1], trace.logits.argmax(-1))


def test_attention_statistics_of_known_patterns():
  t = 5
  uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
  previous = np.eye(t, k=-1)
  previous[0, 0] = 1.0
  probs = np.stack([uniform, previous])[None, None]  # [L=1, B=1, N=2, T, S]
  valid = np.ones((1, t), bool)
  entropy = analysis.attention_entropy(probs, valid)
  assert entropy.shape == (1, 2)
  assert entropy[0, 0] == pytest.approx(np.mean(np.log(np.arange(1, t + 1))))
  assert entropy[0, 1] == pytest.approx(0.0)
  distance = analysis.attention_distance(probs, valid)
  assert distance[0, 0] == pytest.approx(np.mean(np.arange(t) / 2))
  assert distance[0, 1] == pytest.approx((t - 1) / t)  # 1 for every query but the first
  # Padding queries do not count.
  valid[0, 0] = False
  assert analysis.attention_distance(probs, valid)[0, 1] == pytest.approx(1.0)


def test_layer_stats_shapes_and_relu_sparsity():
  cfg = CFG.replace(activation="relu")
  stats = analysis.layer_stats(_trace(cfg))
  assert stats["residual_rms"].shape == (cfg.n_layers + 1,)
  assert stats["update_ratio"].shape == stats["ffn_rms"].shape == (cfg.n_layers,)
  assert stats["attention_entropy"].shape == stats["attention_distance"].shape == (cfg.n_layers, cfg.n_heads)
  # A random ReLU layer zeroes about half of its units; a SwiGLU layer essentially none.
  assert np.all((stats["ffn_zero_fraction"] > 0.3) & (stats["ffn_zero_fraction"] < 0.7))
  assert np.all(analysis.layer_stats(_trace(CFG))["ffn_zero_fraction"] < 0.01)
  assert np.all(stats["attention_entropy"] > 0) and np.all(stats["attention_distance"] >= 0)


def test_load_restores_a_run_and_an_hf_checkpoint(tmp_path):
  config = overrides.apply(experiments.get("smoke"), [
      "model.d_model=32", "model.n_layers=1", "data.seq_len=16", "data.batch_size=4",
      "data.synthetic.num_examples=200", "train.steps=2", "train.eval_every=0",
      "train.sample_tokens=0", "train.progress=false", "train.tensorboard=false", "mesh.data=1"])
  loop.train(config, tmp_path / "run")
  run = analysis.load(tmp_path / "run")
  assert run.source == "run" and run.config == config and run.tokenizer is not None
  ids = np.asarray([run.tokenizer.encode("copy abc=")], np.int32)
  trace = analysis.capture(run.model, run.params, ids)
  np.testing.assert_allclose(trace.logits, _forward(run.model, run.params, ids), rtol=1e-5, atol=1e-5)

  hf.save(registry.build(CFG), _params(CFG), tmp_path / "hf")
  loaded = analysis.load(tmp_path / "hf", scan_layers=False)
  assert loaded.source == "hf" and loaded.tokenizer is None and not loaded.cfg.scan_layers
  ids = _ids()[0]
  np.testing.assert_allclose(analysis.capture(loaded.model, loaded.params, ids).logits,
                             _forward(registry.build(CFG), _params(CFG), ids), rtol=1e-5, atol=1e-5)
  with pytest.raises(FileNotFoundError, match="neither a run directory nor"):
    analysis.load(tmp_path)


def test_plots_render(tmp_path):
  trace = _trace(CFG)
  lens = analysis.logit_lens(trace, _params(CFG))
  figures = {
      "attention": analysis.plots.attention_maps(trace, batch=1, layers=[1], tokens=list("abcdefg")),
      "stats": analysis.plots.layer_stats(analysis.layer_stats(trace)),
      "lens": analysis.plots.logit_lens(lens, decode=lambda ids: chr(97 + ids[0] % 26)),
  }
  for name, fig in figures.items():
    for path in analysis.plots.save(fig, tmp_path / name):
      assert path.stat().st_size > 1000, path
  # Row 1 has two padding tokens: its attention grid shows the 5 real ones.
  assert figures["attention"].axes[0].images[0].get_array().shape == (5, 5)
