"""research.hf.tensors: each transform computes what the HF layer computes, and inverts exactly."""

import numpy as np
import pytest

from research.hf.tensors import Conv1D, Dense, Flat, FusedQKV, Rule, applicable

D, N, K, H = 6, 4, 2, 3
rng = np.random.default_rng(0)
x = rng.standard_normal(D)


def _round_trips(transform, hf, our_shapes):
  ours = transform.to_ours(hf, our_shapes)
  assert [a.shape for a in ours] == [tuple(s) for s in our_shapes]
  assert transform.hf_shapes(our_shapes) == [a.shape for a in hf]
  for a, b in zip(transform.to_hf(ours), hf):
    np.testing.assert_array_equal(a, b)
  return ours


def test_dense_is_torch_linear():
  weight = rng.standard_normal((N * H, D))  # nn.Linear: [out, in]
  (kernel,) = _round_trips(Dense(), [weight], [(D, N, H)])
  np.testing.assert_allclose(np.einsum("D,DNH->NH", x, kernel).reshape(-1), weight @ x)


def test_dense_with_two_input_dims_is_the_output_projection():
  weight = rng.standard_normal((D, N * H))
  (kernel,) = _round_trips(Dense(in_dims=2), [weight], [(N, H, D)])
  z = rng.standard_normal((N, H))
  np.testing.assert_allclose(np.einsum("NH,NHD->D", z, kernel), weight @ z.reshape(-1))


def test_conv1d_is_stored_input_first():
  weight = rng.standard_normal((N * H, D))  # GPT-2 Conv1D: [in, out]
  (kernel,) = _round_trips(Conv1D(in_dims=2), [weight], [(N, H, D)])
  z = rng.standard_normal((N, H))
  np.testing.assert_allclose(np.einsum("NH,NHD->D", z, kernel), z.reshape(-1) @ weight)


def test_flat_bias_splits_heads():
  bias = rng.standard_normal(N * H)
  (ours,) = _round_trips(Flat(), [bias], [(N, H)])
  np.testing.assert_array_equal(ours[1], bias[H:2 * H])


def _hf_split(fused, layout, kv):
  """q [N, H], k and v [kv, H] from one token's fused projection, as transformers splits it."""
  if layout == "concat":  # GPT-2: split(hidden) on the output, then heads
    q, k, v = np.split(fused, [N * H, (N + kv) * H])
    return q.reshape(N, H), k.reshape(kv, H), v.reshape(kv, H)
  grouped = fused.reshape(kv, N // kv + 2, H)  # Falcon: view(K, G + 2, H)
  return grouped[:, :-2].reshape(N, H), grouped[:, -2], grouped[:, -1]


@pytest.mark.parametrize("layout, kv", [("concat", N), ("concat", 1), ("grouped", K),
                                        ("grouped", N), ("grouped", 1)])
@pytest.mark.parametrize("storage", ["dense", "conv1d"])
def test_fused_qkv_kernels_split_as_transformers_does(layout, kv, storage):
  width = (N + 2 * kv) * H
  weight = rng.standard_normal((width, D) if storage == "dense" else (D, width))
  shapes = [(D, N, H), (D, kv, H), (D, kv, H)]
  q, k, v = _round_trips(FusedQKV(layout, storage), [weight], shapes)
  fused = weight @ x if storage == "dense" else x @ weight
  for ours, ref in zip((q, k, v), _hf_split(fused, layout, kv)):
    np.testing.assert_allclose(np.einsum("D,DKH->KH", x, ours), ref)


def test_grouped_with_one_query_per_kv_head_is_neox_per_head_layout():
  bias = rng.standard_normal(3 * N * H)
  q, k, v = _round_trips(FusedQKV("grouped", "bias"), [bias], [(N, H), (N, H), (N, H)])
  per_head = bias.reshape(N, 3, H)  # GPT-NeoX / BLOOM: view(N, 3 * H) then chunk(3)
  for i, ours in enumerate((q, k, v)):
    np.testing.assert_array_equal(ours, per_head[:, i])


def test_fused_qkv_rejects_unknown_layouts():
  with pytest.raises(ValueError, match="layout"):
    FusedQKV("interleaved", "dense")


def test_applicable_expands_layers_and_skips_absent_params():
  rules = [Rule("w.{i}", "layers_{i}/w"), Rule("b.{i}", "layers_{i}/b"), Rule("e", "embed")]
  got = applicable(rules, ["layers_0/w", "layers_1/w", "embed"], "test")
  assert [r.hf for r in got] == [("w.0",), ("w.1",), ("e",)]


def test_applicable_names_params_no_rule_makes():
  with pytest.raises(RuntimeError, match="extra"):
    applicable([Rule("e", "embed")], ["embed", "extra"], "test")


def test_applicable_refuses_a_rule_that_finds_only_some_of_its_params():
  rule = Rule("qkv", ["q", "k", "v"], FusedQKV("concat", "bias"))
  with pytest.raises(RuntimeError, match="only some"):
    applicable([rule], ["q", "k"], "test")
