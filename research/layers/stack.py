"""A stack of identical blocks: `nn.scan`ned (compile time flat in depth) or a Python loop.

Both forms give the same function; the scanned form stores each parameter with a leading
'layers' axis, the loop form as `layers_0`, `layers_1`, ... Rematerialisation wraps the
block with the policy named by `cfg.remat`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from research.layers import pipeline
from research.layers.kv_cache import LayerCache

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # Save only the sub-layer outputs named in attention.py and ffn.py.
    "outputs": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


class Stack(nn.Module):
  """Applies `n_layers` copies of `block` (a Block-like module class) to x.

  `cache`, when given, holds every layer's slice stacked on a leading L axis.
  """

  cfg: object  # ModelConfig
  block: type[nn.Module]
  n_layers: int
  block_kwargs: tuple = ()  # (name, value) pairs passed to every block

  @nn.compact
  def __call__(self, x, mask, bias, positions, cache: LayerCache | None = None, deterministic=True):
    cfg = self.cfg
    block = self.block
    if cfg.remat != "none":
      # static_argnums counts self as 0: x=1, mask=2, bias=3, positions=4, cache=5, det=6.
      block = nn.remat(
          block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
          static_argnums=(6,))
    kwargs = dict(self.block_kwargs)
    if cfg.pipeline_stages > 1 and not self.is_initializing():
      # Initialisation (below) creates the parameters exactly as the plain scanned stack.
      if cache is not None:
        raise ValueError("pipeline parallelism is for training; decode with pipeline_stages=1")
      dropout = not deterministic and max(cfg.attn_dropout, cfg.resid_dropout) > 0
      out = pipeline.run(
          self.variables["params"]["layers"], cfg, self.block(cfg, parent=None, **kwargs), x, mask,
          bias, positions, deterministic, self.make_rng("dropout") if dropout else None,
          REMAT_POLICIES.get(cfg.remat))
      return out, None
    if cfg.scan_layers:
      scanned = nn.scan(
          block,
          variable_axes={"params": 0, "intermediates": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
          length=self.n_layers,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )
      return scanned(cfg, name="layers", **kwargs)(x, mask, bias, positions, cache, deterministic)
    new_caches = []
    for i in range(self.n_layers):
      layer_cache = None if cache is None else jax.tree.map(lambda a, i=i: a[i], cache)
      x, layer_cache = block(cfg, name=f"layers_{i}", **kwargs)(
          x, mask, bias, positions, layer_cache, deterministic)
      new_caches.append(layer_cache)
    if cache is None:
      return x, None
    return x, cache.replace(
        k=jax.numpy.stack([c.k for c in new_caches]), v=jax.numpy.stack([c.v for c in new_caches]))


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
