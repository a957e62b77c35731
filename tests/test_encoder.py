"""research.models.encoder: bidirectional attention, padding, packing, ALBERT sharing, sweep axes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.config import ModelConfig
from research.models import registry
from research.models.encoder import padding_offset_positions
from research.models.registry import num_params

BERT = dict(family="encoder", vocab_size=61, d_model=32, n_layers=3, n_heads=4, max_seq_len=40,
            norm="layernorm", norm_bias=True, norm_eps=1e-12, norm_placement="post",
            embed_norm=True, activation="gelu", position="learned", qkv_bias=True, out_bias=True,
            mlp_bias=True, type_vocab_size=2, pooler=True, encoder_heads=("mlm",))


def bert(**changes) -> ModelConfig:
  return ModelConfig(**{**BERT, **changes})


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  model = registry.build(cfg)
  return jax.jit(lambda p, ids, **kw: model.apply({"params": p}, input_ids=ids, **kw))


def forward(cfg, params, ids, **kw):
  return _forward(cfg)(params, jnp.asarray(ids), **kw)


def _ids(shape=(2, 12), seed=0, vocab=61):
  return np.random.default_rng(seed).integers(3, vocab, shape).astype(np.int32)


def _perturbed(params, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype), params)


# Sweep axes of the decoder applied to the encoder: norm, placement, activation, position, heads.
SWEEP = {
    "bert": {},
    "pre_rms_swiglu_rope_gqa": dict(norm="rmsnorm", norm_bias=False, norm_placement="pre",
                                   activation="swiglu", position="rope", n_kv_heads=2,
                                   embed_norm=False),
    "sandwich_geglu_alibi_mqa": dict(norm_placement="sandwich", activation="geglu",
                                     position="alibi", n_kv_heads=1),
    "deepnorm_t5_bias": dict(norm_placement="deepnorm", position="t5", activation="relu"),
    "parallel_sinusoidal": dict(parallel_block=True, position="sinusoidal"),
    "roberta_positions": dict(position_padding_idx=1, type_vocab_size=1),
    "albert_factorised_all_shared": dict(embed_dim=16, albert_sharing="all",
                                         activation="gelu_tanh"),
}


@pytest.mark.parametrize("case", SWEEP)
def test_attention_is_bidirectional_and_ignores_padding(case):
  cfg = bert(**SWEEP[case])
  params = _perturbed(registry.init_params(cfg, jax.random.key(0)))
  ids = _ids()
  mask = np.ones_like(ids)
  mask[1, 8:] = 0
  if cfg.position_padding_idx is not None:
    ids[1, 8:] = cfg.position_padding_idx
  base = forward(cfg, params, ids, attention_mask=mask)["mlm"]
  assert np.isfinite(base).all()
  # Changing the last real token changes the outputs at every earlier position.
  later = ids.copy()
  later[:, 7] = (later[:, 7] + 1) % cfg.vocab_size
  changed = forward(cfg, params, later, attention_mask=mask)["mlm"]
  assert (np.abs(changed - base)[:, :7].max(axis=-1) > 1e-6).all()
  # Changing padding (under the mask) changes nothing at the real positions.
  padded = ids.copy()
  padded[1, 8:] = 5
  other = forward(cfg, params, padded, attention_mask=mask)["mlm"]
  np.testing.assert_allclose(np.asarray(other)[1, :8], np.asarray(base)[1, :8], atol=1e-5)


def test_packed_segments_equal_separate_sequences():
  """Two documents packed in one row (segment_ids) give each document's own outputs."""
  cfg = bert()
  params = _perturbed(registry.init_params(cfg, jax.random.key(1)))
  a, b = _ids((1, 5), seed=1), _ids((1, 7), seed=2)
  packed = np.concatenate([a, b], axis=1)
  segments = np.array([[1] * 5 + [2] * 7])
  out = forward(cfg, params, packed, segment_ids=segments)["mlm"]
  np.testing.assert_allclose(out[:, :5], forward(cfg, params, a)["mlm"], atol=1e-5)
  np.testing.assert_allclose(out[:, 5:], forward(cfg, params, b)["mlm"], atol=1e-5)


def test_scan_loop_and_remat_agree():
  cfg = bert()
  params = _perturbed(registry.init_params(cfg, jax.random.key(2)))
  from research.layers.stack import unstack_layers

  ids = _ids()
  ref = forward(cfg, params, ids)["mlm"]
  np.testing.assert_allclose(
      forward(cfg.replace(scan_layers=False), unstack_layers(params), ids)["mlm"], ref, atol=1e-5)
  np.testing.assert_allclose(forward(cfg.replace(remat="full"), params, ids)["mlm"], ref, atol=1e-5)


def test_roberta_position_ids_follow_transformers():
  ids = np.array([[0, 5, 6, 2, 1, 1], [1, 1, 0, 7, 2, 1]])
  # transformers: mask = ids != pad; cumsum(mask) * mask + pad.
  expected = [[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1]]
  np.testing.assert_array_equal(padding_offset_positions(jnp.asarray(ids), 1), expected)
  assert ModelConfig(**{**BERT, "max_seq_len": 514}, position_padding_idx=1).max_input_len == 512


# --------------------------------------------------------------------------- ALBERT sharing


def _sharing(mode, **changes):
  changes = {"scan_layers": mode in ("none", "all"), **changes}
  return bert(albert_sharing=mode, encoder_heads=(), pooler=False, **changes)


def test_albert_sharing_parameter_counts_follow_the_definitions():
  """Each mode's count is the unshared model's minus the repeated copies of what it shares."""
  cfg = _sharing("none")
  d, f, n = cfg.d_model, cfg.ffn_hidden, cfg.n_layers
  attention = 4 * (d * d + d)  # q, k, v, o with biases
  ffn = d * f + f + f * d + d
  norms = 2 * 2 * d  # the post-attention and post-FFN LayerNorms
  layer = attention + ffn + norms
  embeddings = (cfg.vocab_size + cfg.max_seq_len + cfg.type_vocab_size) * d + 2 * d
  assert num_params(cfg) == embeddings + n * layer
  assert num_params(_sharing("all")) == embeddings + layer
  assert num_params(_sharing("attention")) == embeddings + attention + n * (ffn + norms)
  assert num_params(_sharing("ffn")) == embeddings + ffn + n * (attention + norms)
  # The factorised embedding: V x E + E x H (+ the projection's bias) instead of V x H.
  e = 8
  factorised = _sharing("all", embed_dim=e)
  assert num_params(factorised) == ((cfg.vocab_size + cfg.max_seq_len + cfg.type_vocab_size) * e
                                     + 2 * e + e * d + d + layer)


@pytest.mark.parametrize("mode", ["all", "attention", "ffn"])
def test_shared_layers_equal_an_unshared_stack_with_copied_weights(mode):
  shared_cfg = _sharing(mode)
  shared = _perturbed(registry.init_params(shared_cfg, jax.random.key(3)))
  plain_cfg = _sharing("none", scan_layers=False)
  plain = registry.init_params(plain_cfg, jax.random.key(4))
  blocks = dict(plain["blocks"])
  for i in range(plain_cfg.n_layers):
    layer = dict(blocks[f"layers_{i}"])
    if mode == "all":
      layer = shared["blocks"]["shared"]
    else:
      own = shared["blocks"][f"layers_{i}"]
      layer = {**own, ("attn" if mode == "attention" else "mlp"):
               shared["blocks"]["shared_attn" if mode == "attention" else "shared_mlp"]}
    blocks[f"layers_{i}"] = layer
  plain = {**shared, "blocks": blocks}
  ids = _ids()
  np.testing.assert_allclose(forward(plain_cfg, plain, ids)["hidden"],
                             forward(shared_cfg, shared, ids)["hidden"], atol=1e-5)


def test_all_shared_scan_equals_loop():
  cfg = _sharing("all")
  params = _perturbed(registry.init_params(cfg, jax.random.key(5)))
  ids = _ids()
  np.testing.assert_allclose(forward(cfg.replace(scan_layers=False), params, ids)["hidden"],
                             forward(cfg, params, ids)["hidden"], atol=1e-5)


# ------------------------------------------------------------------------------- config


@pytest.mark.parametrize("changes, needle", [
    (dict(encoder_heads=("mlm", "ner")), "encoder_heads='ner' is not allowed"),
    (dict(crf=True), "crf=True needs 'token_classification'"),
    (dict(albert_sharing="ffn"), "set scan_layers=False"),
    (dict(albert_sharing="every"), "albert_sharing='every' is not allowed"),
    (dict(sliding_window=4), "sliding_window=4"),
    (dict(position_padding_idx=1, position="rope"), "position_padding_idx=1 offsets learned"),
])
def test_encoder_fields_are_validated(changes, needle):
  with pytest.raises(ValueError) as err:
    bert(**changes)
  assert needle in str(err.value)


@pytest.mark.parametrize("changes, needle", [
    (dict(embed_dim=16), "ModelConfig.embed_dim=16 only applies to family='encoder'"),
    (dict(encoder_heads=("mlm",)), "encoder_heads=('mlm',) only applies to family='encoder'"),
    (dict(pooler=True), "pooler=True only applies"),
])
def test_encoder_fields_are_refused_elsewhere(changes, needle):
  with pytest.raises(ValueError) as err:
    ModelConfig(**changes)
  assert needle in str(err.value)


def test_param_axes_use_the_shared_logical_names():
  axes = registry.param_axes(bert(embed_dim=16, albert_sharing="all",
                                  encoder_heads=("mlm", "token_classification"), crf=True))
  assert tuple(axes["embed"]["token_types"]["embedding"]) == ("token_types", "embed")
  assert tuple(axes["embed"]["project"]["kernel"]) == ("factor_embed", "embed")
  assert tuple(axes["blocks"]["shared"]["attn"]["q"]["kernel"]) == ("embed", "heads", "head_dim")
  assert tuple(axes["mlm"]["bias"]) == ("vocab",)
  assert tuple(axes["crf"]["transitions"]) == ("labels", "labels")
