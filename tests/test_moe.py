import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from research.layers import routing
from research.layers.ffn import MLP
from research.layers.moe import MoE, collect_moe_metrics
from research.layers.stack import stack_layers, unstack_layers
from research.models import registry
from support import forward, random_ids, tiny

D = 16


def moe_cfg(**overrides):
  base = dict(d_model=D, n_heads=4, moe_experts=4, moe_top_k=2, mlp_bias=True)
  base.update(overrides)
  return tiny(**base)


def init_moe(cfg, x):
  return jax.jit(lambda x: nn.unbox(MoE(cfg).init(jax.random.key(0), x)["params"]))(x)


def apply_moe(cfg, params, x, valid=None):
  """(output, metrics) of one MoE layer, jitted."""

  @jax.jit
  def run(params, x, valid):
    y, state = MoE(cfg).apply({"params": params}, x, valid_BT=valid, mutable=["moe"])
    return y, collect_moe_metrics(state["moe"])[1]

  return run(params, x, valid)


def inputs(shape=(2, 8), seed=1):
  return jax.random.normal(jax.random.key(seed), (*shape, D))


def force_expert(params, expert, x):
  """Router weights that send every token of x (whose feature 0 is set to 1) to `expert` first."""
  kernel = np.zeros_like(params["router"]["kernel"])
  kernel[0, expert] = 20.0
  params = {**params, "router": {"kernel": jnp.asarray(kernel)}}
  return params, x.at[..., 0].set(1.0)


def expert_ffn_params(params, e):
  """The dense MLP parameters of expert e."""
  return {name: {key: value[e] for key, value in params[name].items()}
          for name in ("wi_gate", "wi_up", "wi", "wo") if name in params}


def dense(cfg, mlp_params, x):
  return jax.jit(lambda p, x: MLP(cfg).apply({"params": p}, x))(mlp_params, x)


# ----------------------------------------------------------------- equal to a dense FFN


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("dropless", [False, True])
def test_one_expert_equals_the_dense_ffn(activation, dropless):
  cfg = moe_cfg(moe_experts=1, moe_top_k=1, moe_capacity_factor=1.0, moe_dropless=dropless,
                activation=activation)
  x = inputs()
  mlp_params = jax.jit(lambda x: nn.unbox(MLP(cfg).init(jax.random.key(3), x)["params"]))(x)
  params = init_moe(cfg, x)
  params.update({name: jax.tree.map(lambda a: a[None], p) for name, p in mlp_params.items()})
  y, metrics = apply_moe(cfg, params, x)
  np.testing.assert_allclose(y, dense(cfg, mlp_params, x), atol=1e-6)
  assert metrics["moe/dropped_fraction"] == 0.0
  assert metrics["moe/load_balance_loss"] == pytest.approx(1.0)


@pytest.mark.parametrize("dropless", [False, True])
def test_one_expert_model_equals_the_dense_model(dropless):
  dense_cfg = tiny(activation="geglu")
  moe = dense_cfg.replace(moe_experts=1, moe_top_k=1, moe_dropless=dropless, moe_capacity_factor=1.0)
  params = registry.init_params(dense_cfg, jax.random.key(0))
  layers = dict(params["blocks"]["layers"])
  mlp = layers.pop("mlp")
  router = jnp.zeros((dense_cfg.n_layers, dense_cfg.d_model, 1))
  layers["moe"] = {"router": {"kernel": router}, **jax.tree.map(lambda a: a[:, None], mlp)}
  moe_params = {**params, "blocks": {"layers": layers}}
  assert jax.tree.structure(moe_params) == jax.tree.structure(registry.param_shapes(moe))
  ids = random_ids((2, 9))
  np.testing.assert_allclose(forward(moe, moe_params, ids), forward(dense_cfg, params, ids), atol=1e-5)


@pytest.mark.parametrize("dropless", [False, True])
def test_identical_routing_equals_that_experts_ffn(dropless):
  # Top-1 with the softmax after top-k: gate 1, so the layer is exactly expert 2's FFN.
  cfg = moe_cfg(moe_top_k=1, moe_softmax_after_topk=True, moe_capacity_factor=4.0,
                moe_dropless=dropless)
  params, x = force_expert(init_moe(cfg, inputs()), 2, inputs())
  y, metrics = apply_moe(cfg, params, x)
  np.testing.assert_allclose(y, dense(cfg, expert_ffn_params(params, 2), x), atol=1e-6)
  np.testing.assert_allclose([metrics[f"moe/expert_load/{i}"] for i in range(4)], [0, 0, 1, 0])
  # Collapsed routing: the balance loss is N = 4 (times P_2, which is ~1 here).
  assert metrics["moe/load_balance_loss"] == pytest.approx(4.0, rel=1e-6)


def test_switch_gate_scales_the_expert_output_by_its_probability():
  cfg = moe_cfg(moe_top_k=1, moe_softmax_after_topk=False, moe_capacity_factor=4.0)
  params, x = force_expert(init_moe(cfg, inputs()), 1, inputs())
  params["router"]["kernel"] = params["router"]["kernel"].at[0, 1].set(1.0)  # p_1 well below 1
  y, _ = apply_moe(cfg, params, x)
  p1 = jax.nn.softmax(x @ params["router"]["kernel"])[..., 1:2]
  assert float(p1.max()) < 0.9
  np.testing.assert_allclose(y, p1 * dense(cfg, expert_ffn_params(params, 1), x), atol=1e-6)


def test_top2_output_is_the_gate_weighted_sum_of_the_two_experts():
  cfg = moe_cfg(moe_top_k=2, moe_softmax_after_topk=True, moe_dropless=True, mlp_bias=False)
  x = inputs((1, 6))
  params = init_moe(cfg, x)
  y, _ = apply_moe(cfg, params, x)
  logits = np.asarray(x @ params["router"]["kernel"])
  outs = [np.asarray(dense(cfg, expert_ffn_params(params, e), x)) for e in range(4)]
  expected = np.zeros_like(outs[0])
  for t in range(6):
    top = np.argsort(-logits[0, t])[:2]
    gates = np.exp(logits[0, t, top]) / np.exp(logits[0, t, top]).sum()
    expected[0, t] = sum(g * outs[e][0, t] for g, e in zip(gates, top))
  np.testing.assert_allclose(y, expected, atol=1e-6)


# ------------------------------------------------------------------ capacity and drops


def test_capacity_formula():
  assert routing.expert_capacity(10, 4, 2, 1.25) == 7  # ceil(6.25)
  assert routing.expert_capacity(4, 2, 2, 2.0) == 4  # ceil(8), but an expert sees a token once
  assert routing.expert_capacity(1, 8, 1, 1.0) == 1
  valid = jnp.array([[1] * 10, [0] * 6 + [1] * 4])
  np.testing.assert_array_equal(routing.group_capacity(valid, 4, 2, 1.25), [7, 3])


def test_slots_fill_in_token_order_and_overflow_is_dropped():
  expert = jnp.array([[[0], [0], [1], [0], [0]]])
  slot, kept = routing.assign_slots(expert, jnp.ones((1, 5)), 2, capacity=2)
  np.testing.assert_array_equal(slot[0, :, 0], [0, 1, 0, 2, 3])
  np.testing.assert_array_equal(kept[0, :, 0], [True, True, True, False, False])


def test_token_and_choice_priority_drop_different_assignments():
  # Tokens' (first, second) choices; 2 experts with 2 slots each, 6 assignments.
  expert = jnp.array([[[0, 1], [1, 0], [0, 1]]])
  valid = jnp.ones((1, 3))
  slot, kept = routing.assign_slots(expert, valid, 2, 2, priority="token")
  np.testing.assert_array_equal(slot[0], [[0, 0], [1, 1], [2, 2]])
  np.testing.assert_array_equal(kept[0], [[True, True], [True, True], [False, False]])
  # GShard: every first choice first, so token 2 keeps its first choice and token 1 loses
  # its second.
  slot, kept = routing.assign_slots(expert, valid, 2, 2, priority="choice")
  np.testing.assert_array_equal(slot[0], [[0, 1], [0, 2], [1, 2]])
  np.testing.assert_array_equal(kept[0], [[True, True], [True, False], [True, False]])


def test_padding_claims_no_slot_and_capacity_can_differ_per_sequence():
  expert = jnp.array([[[1], [1], [1], [1]], [[1], [1], [1], [1]]])
  valid = jnp.array([[0, 1, 1, 1], [1, 1, 1, 1]])
  slot, kept = routing.assign_slots(expert, valid, 2, capacity=jnp.array([2, 3]))
  np.testing.assert_array_equal(kept[0, :, 0], [False, True, True, False])
  np.testing.assert_array_equal(slot[0, 1:, 0], [0, 1, 2])
  np.testing.assert_array_equal(kept[1, :, 0], [True, True, True, False])


def test_dispatch_and_combine_place_tokens_and_gates_in_their_slots():
  expert = jnp.array([[[0, 1], [1, 0], [0, 1]]])
  gate = jnp.array([[[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]]])
  slot, kept = routing.assign_slots(expert, jnp.ones((1, 3)), 2, 2, priority="choice")
  dispatch, combine = routing.dispatch_and_combine(expert, gate, slot, kept, 2, 2)
  want = np.zeros((1, 3, 2, 2))
  for t, e, c, g in [(0, 0, 0, 0.6), (0, 1, 1, 0.4), (1, 1, 0, 0.7), (2, 0, 1, 0.9)]:
    want[0, t, e, c] = g
  np.testing.assert_allclose(combine, want)
  np.testing.assert_array_equal(dispatch, want > 0)


def test_tokens_past_capacity_skip_the_layer():
  # Every token to expert 3, top-1, gate 1; capacity ceil(0.5 * 8 / 4) = 1 slot per sequence.
  cfg = moe_cfg(moe_top_k=1, moe_softmax_after_topk=True, moe_capacity_factor=0.5)
  params, x = force_expert(init_moe(cfg, inputs()), 3, inputs())
  y, metrics = apply_moe(cfg, params, x)
  ffn = dense(cfg, expert_ffn_params(params, 3), x)
  np.testing.assert_allclose(y[:, 0], ffn[:, 0], atol=1e-6)
  np.testing.assert_array_equal(y[:, 1:], 0.0)
  assert metrics["moe/dropped_fraction"] == pytest.approx(7 / 8)


def test_capacity_dropping_with_token_priority_keeps_the_model_causal():
  cfg = tiny(moe_experts=4, moe_top_k=2, moe_capacity_factor=0.5)
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((1, 12))
  model = registry.build(cfg)
  dropped = jax.jit(lambda p, x: collect_moe_metrics(
      model.apply({"params": p}, input_ids=x, mutable=["moe"])[1]["moe"])[1]["moe/dropped_fraction"])
  assert dropped(params, ids) > 0.1
  changed = ids.at[0, 7].set((ids[0, 7] + 1) % cfg.vocab_size)
  a, b = forward(cfg, params, ids), forward(cfg, params, changed)
  np.testing.assert_array_equal(a[:, :7], b[:, :7])
  assert not np.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("dropless", [False, True])
def test_left_padding_does_not_change_real_tokens(dropless):
  cfg = tiny(moe_experts=4, moe_top_k=2, moe_capacity_factor=0.75, moe_dropless=dropless)
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((1, 6))
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), ids], axis=1)
  mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_allclose(
      forward(cfg, params, padded, attention_mask=mask)[:, 3:], forward(cfg, params, ids), atol=1e-5)


# ---------------------------------------------------------------------------- losses


def test_load_balance_loss_equals_its_formula():
  logits = jax.random.normal(jax.random.key(0), (2, 7, 5))
  valid = jnp.array([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
  expert, _ = routing.top_k_gates(logits, 2, False)
  loss, load = routing.load_balance_loss(logits, expert, valid)
  rows = np.asarray(valid, bool).reshape(-1)
  probs = np.asarray(jax.nn.softmax(logits)).reshape(-1, 5)[rows]
  chosen = np.asarray(expert).reshape(-1, 2)[rows]
  f = np.array([(chosen == i).sum() for i in range(5)]) / chosen.size
  np.testing.assert_allclose(load, f, rtol=1e-6)
  np.testing.assert_allclose(loss, 5 * np.sum(f * probs.mean(axis=0)), rtol=1e-6)


def test_load_balance_loss_is_one_when_uniform_and_grows_with_imbalance():
  experts, tokens = 4, 16
  uniform = 5.0 * jax.nn.one_hot(jnp.arange(tokens) % experts, experts)[None]
  flat = jnp.zeros((1, tokens, experts))
  for logits in (uniform, flat):
    expert, _ = routing.top_k_gates(logits, 1, False)
    loss, _ = routing.load_balance_loss(logits, expert, jnp.ones((1, tokens)))
    assert float(loss) == pytest.approx(1.0, abs=1e-6)
  # Confident routing (P ~ f): N sum f_i^2 >= 1, equal only when f is uniform.
  losses = []
  for share in (4, 6, 10, 16):  # tokens sent to expert 0, the rest spread over the others
    assign = jnp.concatenate([jnp.zeros(share, jnp.int32), jnp.arange(tokens - share) % 3 + 1])
    logits = 30.0 * jax.nn.one_hot(assign, experts)[None]
    expert, _ = routing.top_k_gates(logits, 1, False)
    losses.append(float(routing.load_balance_loss(logits, expert, jnp.ones((1, tokens)))[0]))
  assert losses[0] == pytest.approx(1.0, abs=1e-6)
  assert all(a < b for a, b in zip(losses, losses[1:]))
  assert losses[-1] == pytest.approx(experts, rel=1e-6)


def test_z_loss_equals_its_formula():
  logits = 3.0 * jax.random.normal(jax.random.key(1), (2, 5, 4))
  valid = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
  lse = np.log(np.exp(np.asarray(logits, np.float64)).sum(-1))
  want = (lse ** 2 * np.asarray(valid)).sum() / 7
  np.testing.assert_allclose(routing.router_z_loss(logits, valid), want, rtol=1e-6)


def test_sown_aux_loss_is_the_weighted_sum_and_is_summed_over_layers():
  cfg = tiny(n_layers=4, moe_experts=4, moe_aux_weight=0.3, moe_z_weight=0.05)
  params = registry.init_params(cfg, jax.random.key(0))
  model = registry.build(cfg)
  _, state = jax.jit(lambda p, x: model.apply({"params": p}, input_ids=x, mutable=["moe"]))(
      params, random_ids((2, 8)))
  sown = state["moe"]["blocks"]["layers"]["moe"]
  per_layer = 0.3 * sown["load_balance_loss"][0] + 0.05 * sown["z_loss"][0]
  np.testing.assert_allclose(sown["aux_loss"][0], per_layer, rtol=1e-6)
  total, metrics = collect_moe_metrics(state["moe"])
  np.testing.assert_allclose(total, per_layer.sum(), rtol=1e-6)
  np.testing.assert_allclose(metrics["moe/z_loss"], sown["z_loss"][0].mean(), rtol=1e-6)
  np.testing.assert_allclose(sum(metrics[f"moe/expert_load/{i}"] for i in range(4)), 1.0, rtol=1e-6)


def test_router_runs_in_float32_under_bfloat16_compute():
  cfg = moe_cfg(moe_dropless=True)
  x = inputs()
  params = init_moe(cfg, x)
  _, m32 = apply_moe(cfg, params, x)
  _, m16 = apply_moe(cfg.replace(dtype="bfloat16"), params, x)
  assert m16["moe/z_loss"] == m32["moe/z_loss"]
  assert all(m16[f"moe/expert_load/{i}"] == m32[f"moe/expert_load/{i}"] for i in range(4))


def test_router_gets_gradients_from_the_gates_and_the_aux_loss():
  cfg = moe_cfg(moe_aux_weight=0.0, moe_z_weight=0.0)
  x = inputs()
  params = init_moe(cfg, x)

  def loss(p, aux_only):
    y, state = MoE(cfg.replace(moe_aux_weight=1.0) if aux_only else cfg).apply(
        {"params": p}, x, mutable=["moe"])
    total = collect_moe_metrics(state["moe"])[0]
    return total if aux_only else jnp.sum(y ** 2)

  for aux_only in (False, True):
    grad = jax.jit(jax.grad(loss), static_argnums=1)(params, aux_only)
    assert float(jnp.abs(grad["router"]["kernel"]).max()) > 0


# ------------------------------------------------------------------ stacks and presets


@pytest.mark.parametrize("dropless", [False, True])
def test_scanned_and_unscanned_every_second_layer_moe_are_equal(dropless):
  scanned = tiny(n_layers=4, moe_experts=4, moe_every=2, moe_dropless=dropless,
                 moe_capacity_factor=1.0)
  looped = scanned.replace(scan_layers=False)
  params = registry.init_params(scanned, jax.random.key(0))
  blocks = params["blocks"]["layers"]
  assert "mlp" in blocks["block_0"] and "moe" in blocks["block_1"] and "mlp" not in blocks["block_1"]
  loop_params = unstack_layers(params)
  assert jax.tree.structure(loop_params) == jax.tree.structure(registry.param_shapes(looped))
  jax.tree.map(np.testing.assert_array_equal, stack_layers(loop_params), params)
  ids = random_ids((2, 9))
  outs = []
  for cfg, p in ((scanned, params), (looped, loop_params)):
    model = registry.build(cfg)
    logits, state = jax.jit(lambda p, x: model.apply({"params": p}, input_ids=x, mutable=["moe"]))(p, ids)
    outs.append((logits, collect_moe_metrics(state["moe"])))
  np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), outs[0][1], outs[1][1])


def test_remat_leaves_moe_loss_and_grads_unchanged():
  base = tiny(n_layers=4, moe_experts=4, moe_every=2)
  params = registry.init_params(base, jax.random.key(0))
  ids = random_ids((2, 8))

  def loss_and_grad(cfg):
    model = registry.build(cfg)

    def loss(p):
      logits, state = model.apply({"params": p}, input_ids=ids, mutable=["moe"])
      return jnp.mean(logits ** 2) + collect_moe_metrics(state["moe"])[0]

    return jax.jit(jax.value_and_grad(loss))(params)

  (l0, g0), (l1, g1) = loss_and_grad(base), loss_and_grad(base.replace(remat="full"))
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_every_moe_parameter_has_logical_axes():
  cfg = tiny(moe_experts=4, moe_every=2, mlp_bias=True)
  axes = registry.param_axes(cfg)["blocks"]["layers"]["block_1"]["moe"]
  assert axes["router"]["kernel"] == P("layers", "embed", "experts")
  assert axes["wi_gate"]["kernel"] == P("layers", "experts", "embed", "mlp")
  assert axes["wo"]["kernel"] == P("layers", "experts", "mlp", "embed")
  assert axes["wo"]["bias"] == P("layers", "experts", "embed")


# ---------------------------------------------------------------- expert parallelism


def _ep_loss(cfg):
  model = registry.build(cfg)

  def loss(params, ids):
    logits, state = model.apply({"params": params}, input_ids=ids, mutable=["moe"])
    aux, metrics = collect_moe_metrics(state["moe"])
    nll = -jnp.mean(jax.nn.log_softmax(logits[:, :-1]) * jax.nn.one_hot(ids[:, 1:], cfg.vocab_size))
    return nll + aux, (logits, metrics)

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _shard_experts(params, axes, mesh):
  """Places every parameter with an 'experts' axis split over the mesh's 'expert' axis, if any."""
  def place(x, spec):
    names = tuple("expert" if a == "experts" and "expert" in mesh.axis_names else None for a in spec)
    return jax.device_put(x, NamedSharding(mesh, P(*names)))

  return jax.tree.map(place, params, axes)


@pytest.mark.parametrize("mesh_shape,dropless,batch", [
    ({"expert": 4, "data": 2}, False, 8),
    ({"expert": 8}, True, 8),
    ({"expert": 8}, False, 2),  # batch smaller than the axis: no all-to-all
    ({"data": 4, "fsdp": 2}, True, 8),  # no expert axis: the dropless sort runs per shard
])
def test_sharded_equals_single_device(mesh_shape, dropless, batch):
  cfg = tiny(d_model=16, n_layers=2, n_heads=2, moe_experts=8, moe_top_k=2, moe_dropless=dropless,
             moe_capacity_factor=1.0)
  params = registry.init_params(cfg, jax.random.key(0))
  ids = random_ids((batch, 6))
  (l0, (y0, m0)), g0 = _ep_loss(cfg)(params, ids)
  mesh = jax.make_mesh(tuple(mesh_shape.values()), tuple(mesh_shape),
                       axis_types=(AxisType.Auto,) * len(mesh_shape))
  with jax.set_mesh(mesh):
    sharded = _shard_experts(params, registry.param_axes(cfg), mesh)
    lowered = _ep_loss(cfg).lower(sharded, ids)
    hlo = lowered.as_text()
    (l1, (y1, m1)), g1 = lowered.compile()(sharded, ids)  # the program just inspected
  assert ("all_to_all" in hlo) == (batch % mesh_shape.get("expert", batch + 1) == 0)
  if "expert" in mesh_shape:
    assert g1["blocks"]["layers"]["moe"]["wi_gate"]["kernel"].sharding.spec[1] == "expert"
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  np.testing.assert_allclose(y0, y1, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), m0, m1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


@pytest.mark.parametrize("dropless", [False, True])
def test_data_parallel_routing_keeps_tokens_on_their_shard(dropless):
  # A wrong layout would gather all tokens onto every device (a sort or top-k over the
  # sharded batch) and compute every expert on every token everywhere.
  cfg = moe_cfg(moe_experts=8, moe_dropless=dropless)
  x = inputs((8, 6))
  params = init_moe(cfg, x)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  with jax.set_mesh(mesh):
    x = jax.device_put(x, NamedSharding(mesh, P("data")))
    hlo = jax.jit(lambda p, x: MoE(cfg).apply({"params": p}, x)).lower(params, x).compile().as_text()
  assert "all-gather" not in hlo


def test_expert_parallel_layer_under_explicit_mesh_axes():
  cfg = moe_cfg(moe_experts=8)
  x = inputs((4, 6))
  params = init_moe(cfg, x)
  y0, m0 = apply_moe(cfg, params, x)
  mesh = jax.make_mesh((4, 2), ("expert", "data"), axis_types=(AxisType.Explicit,) * 2)
  with jax.set_mesh(mesh):
    y1, m1 = apply_moe(cfg, params, x)
  np.testing.assert_allclose(y0, y1, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), m0, m1)


def test_experts_must_divide_the_expert_axis():
  cfg = moe_cfg(moe_experts=6)
  x = inputs((4, 6))
  params = init_moe(cfg, x)
  with jax.set_mesh(jax.make_mesh((4,), ("expert",), axis_types=(AxisType.Auto,))):
    with pytest.raises(ValueError, match="moe_experts=6 must be divisible by the 'expert' mesh axis"):
      apply_moe(cfg, params, x)


# ------------------------------------------------------------------ reference: transformers


def test_layer_matches_transformers_mixtral_sparse_moe_block():
  torch = pytest.importorskip("torch")
  from transformers import MixtralConfig
  from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

  cfg = moe_cfg(moe_experts=4, moe_top_k=2, moe_softmax_after_topk=True, moe_dropless=True,
                mlp_bias=False, d_ff=24)
  hf_cfg = MixtralConfig(hidden_size=D, intermediate_size=24, num_local_experts=4,
                         num_experts_per_tok=2, experts_implementation="eager")
  torch.manual_seed(0)
  block = MixtralSparseMoeBlock(hf_cfg).eval()
  with torch.no_grad():
    for p in block.parameters():
      p.normal_(0.0, 0.3)
  sd = {k: v.numpy() for k, v in block.state_dict().items()}
  gate_up = sd["experts.gate_up_proj"]  # [E, 2F, D]: gate rows, then up rows
  params = {
      "router": {"kernel": sd["gate.weight"].T},
      "wi_gate": {"kernel": gate_up[:, :24].transpose(0, 2, 1)},
      "wi_up": {"kernel": gate_up[:, 24:].transpose(0, 2, 1)},
      "wo": {"kernel": sd["experts.down_proj"].transpose(0, 2, 1)},
  }
  x = inputs((2, 7))
  with torch.no_grad():
    want = block(torch.tensor(np.asarray(x))).numpy()
  for dropless in (True, False):  # capacity = sequence length drops nothing either
    c = cfg.replace(moe_dropless=dropless, moe_capacity_factor=2.0)
    np.testing.assert_allclose(apply_moe(c, params, x)[0], want, atol=1e-5)
