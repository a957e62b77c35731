"""A stack of identical blocks: `nn.scan`ned (compile time flat in depth) or a Python loop.

Both forms give the same function; the scanned form stores each parameter with a leading
'layers' axis, the loop form as `layers_0`, `layers_1`, ... Rematerialisation wraps the
block with the policy named by `cfg.remat_policy`. When only every k-th layer is a mixture of experts,
the repeated unit is a group of k blocks (`BlockGroup`). `context`, when given, is passed to
every block after `deterministic` (an encoder-decoder's decoder blocks read the encoder output
and the cross-attention mask from it), broadcast over the layers like the mask.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from research.layers import pipeline
from research.layers.kv_cache import LayerCache
from research.layers.moe import COLLECTION as MOE_COLLECTION

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # Save only the sub-layer outputs named in attention.py and ffn.py.
    "outputs": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


def _split_layers(cache: LayerCache | None, groups: int) -> LayerCache | None:
  """A cache stacked on L -> stacked on (groups, L / groups)."""
  if cache is None:
    return None
  return jax.tree.map(lambda a: a.reshape(groups, a.shape[0] // groups, *a.shape[1:]), cache)


def _merge_layers(cache: LayerCache | None) -> LayerCache | None:
  if cache is None:
    return None
  return jax.tree.map(lambda a: a.reshape(a.shape[0] * a.shape[1], *a.shape[2:]), cache)


class BlockGroup(nn.Module):
  """`size` consecutive blocks `block_0` ... `block_{size-1}`, the last one a mixture of experts.

  The unit the stack repeats when only every k-th layer is an MoE (`moe_every` = k > 1), so
  the scanned stack still scans one kind of unit. `cache` is stacked on a leading `size` axis.
  """

  cfg: object  # ModelConfig
  block: type[nn.Module]
  size: int
  block_kwargs: tuple = ()

  @nn.compact
  def __call__(self, x, mask, bias, positions, cache: LayerCache | None = None, deterministic=True,
               context=None):
    extra = () if context is None else (context,)
    new_caches = []
    for j in range(self.size):
      layer_cache = None if cache is None else jax.tree.map(lambda a, j=j: a[j], cache)
      x, layer_cache = self.block(
          self.cfg, moe=j == self.size - 1, name=f"block_{j}", **dict(self.block_kwargs))(
              x, mask, bias, positions, layer_cache, deterministic, *extra)
      new_caches.append(layer_cache)
    if cache is None:
      return x, None
    return x, jax.tree.map(lambda *a: jax.numpy.stack(a), *new_caches)


class Stack(nn.Module):
  """Applies `n_layers` copies of `block` (a Block-like module class) to x.

  `cache`, when given, holds every layer's slice stacked on a leading L axis. With
  `cfg.moe_experts` > 0 the blocks get `moe=True` (every layer, `moe_every` = 1), or the stack
  repeats a `BlockGroup` of `moe_every` blocks whose last is the MoE; parameters then sit
  under `layers` / `layers_{g}` per group, as `block_{j}` within it.
  """

  cfg: object  # ModelConfig
  block: type[nn.Module]
  n_layers: int
  block_kwargs: tuple = ()  # (name, value) pairs passed to every block

  @nn.compact
  def __call__(self, x, mask, bias, positions, cache: LayerCache | None = None, deterministic=True,
               context=None):
    cfg = self.cfg
    block = self.block
    extra = () if context is None else (context,)
    if cfg.remat_policy != "none":
      # static_argnums counts self as 0: x=1, mask=2, bias=3, positions=4, cache=5, det=6
      # (context=7 is traced).
      block = nn.remat(
          block, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers,
          static_argnums=(6,))
    every = cfg.moe_every if cfg.moe_experts else 1
    if self.n_layers % every:
      raise ValueError(f"{self.n_layers} layers do not split into groups of moe_every={every}")
    groups = self.n_layers // every
    if every == 1:
      unit = block
      kwargs = dict(self.block_kwargs, **({"moe": True} if cfg.moe_experts else {}))
    else:
      unit = BlockGroup
      kwargs = dict(block=block, size=every, block_kwargs=self.block_kwargs)
      cache = _split_layers(cache, groups)
    if cfg.pipeline_stages > 1 and not self.is_initializing():
      # Initialisation (below) creates the parameters exactly as the plain scanned stack.
      if cache is not None:
        raise ValueError("pipeline parallelism is for training; decode with pipeline_stages=1")
      if context is not None:
        raise ValueError("pipeline parallelism does not pass a block context (encoder-decoder)")
      dropout = not deterministic and max(cfg.attn_dropout, cfg.resid_dropout) > 0
      out = pipeline.run(
          self.variables["params"]["layers"], cfg, unit(cfg, parent=None, **kwargs), x, mask,
          bias, positions, deterministic, self.make_rng("dropout") if dropout else None,
          REMAT_POLICIES.get(cfg.remat_policy))
      return out, None
    if cfg.scan_layers:
      scanned = nn.scan(
          unit,
          variable_axes={"params": 0, "intermediates": 0, MOE_COLLECTION: 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,) * 3 + (0,) + (nn.broadcast,) * (1 + len(extra)),
          length=groups,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, cache = scanned(cfg, name="layers", **kwargs)(
          x, mask, bias, positions, cache, deterministic, *extra)
    elif isinstance(cache, LayerCache) and every == 1:
      # Each layer writes its slab of the stacked cache in place (LayerCache.layer): no
      # per-layer copies out and no stacking back on every decode step.
      index = cache.write_index
      for g in range(groups):
        view = LayerCache(k=cache.k, v=cache.v, write_index=index[g], layer=g)
        x, view = unit(cfg, name=f"layers_{g}", **kwargs)(
            x, mask, bias, positions, view, deterministic, *extra)
        cache = LayerCache(k=view.k, v=view.v, write_index=index)
    else:
      new_caches = []
      for g in range(groups):
        unit_cache = None if cache is None else jax.tree.map(lambda a, g=g: a[g], cache)
        x, unit_cache = unit(cfg, name=f"layers_{g}", **kwargs)(
            x, mask, bias, positions, unit_cache, deterministic, *extra)
        new_caches.append(unit_cache)
      if cache is not None:
        cache = jax.tree.map(lambda *a: jax.numpy.stack(a), *new_caches)
    return x, cache if every == 1 else _merge_layers(cache)


def unstack_layers(tree):
  """Scanned parameters ({'layers': leading-L arrays}) -> loop form ({'layers_0': ..., ...})."""
  if not isinstance(tree, dict):
    return tree
  out = {}
  for key, value in tree.items():
    if key == "layers" and isinstance(value, dict):
      n = jax.tree.leaves(value)[0].shape[0]
      for i in range(n):
        out[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], value)
    else:
      out[key] = unstack_layers(value)
  return out


def stack_layers(tree):
  """Loop-form parameters ({'layers_0': ..., ...}) -> scanned form ({'layers': stacked})."""
  if not isinstance(tree, dict):
    return tree
  numbered = sorted((int(k.split("_")[1]), k) for k in tree if k.startswith("layers_"))
  out = {k: stack_layers(v) for k, v in tree.items() if not k.startswith("layers_")}
  if numbered:
    layers = [tree[k] for _, k in numbered]
    out["layers"] = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *layers)
  return out


def loop_form(model, params):
  """(model, params) with the stack as a Python loop, for decoding; the same function.

  Decoding reads every layer's weights once per token. From the scanned stack's leading-L
  arrays XLA copies each layer's slice out on every step (a `dynamic-slice` per weight, 15%
  of a d_model 512 decode step on CPU); in the loop form each layer reads its own arrays in
  place, and each writes its slab of the contiguous KV cache in place (`LayerCache.layer`).
  Models that are already loops, PEFT wrappers (whose adapters may hold per-layer state
  outside `layers`) and pipeline stacks are returned unchanged. `generate` decodes this way;
  the paged engine does not (its page pool would be sliced per layer, which costs more).
  """
  cfg = getattr(model, "cfg", None)
  if (not isinstance(model, nn.Module) or cfg is None or not cfg.scan_layers
      or cfg.pipeline_stages > 1):
    return model, params
  return model.clone(cfg=dataclasses.replace(cfg, scan_layers=False)), unstack_layers(params)
