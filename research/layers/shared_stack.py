"""Cross-layer parameter sharing (ALBERT, Lan et al. 2020, section 3.1 and Table 4).

`cfg.albert_sharing` says which parameters the `n_layers` blocks share:

  all        one block applied n_layers times         params: shared/...
  attention  one attention sub-layer, per-layer FFNs   params: shared_attn/..., layers_{i}/...
  ffn        one FFN, per-layer attention              params: shared_mlp/..., layers_{i}/...

In the partial modes each layer keeps its own norms (they belong to neither sub-layer; the
paper leaves them unspecified). "all" scans one block with its parameters broadcast, so
compile time stays flat in depth; the partial modes are a Python loop of blocks that all call
the one shared sub-layer (flax's scan would give a closed-over module a layer axis of its
own), which is why ModelConfig asks for scan_layers=False there. Sharing "none" is the plain
`research.layers.stack.Stack`.
"""

from __future__ import annotations

import flax.linen as nn

from research.layers.attention import Attention
from research.layers.block import Block
from research.layers.ffn import MLP
from research.layers.stack import REMAT_POLICIES


class SharedStack(nn.Module):
  cfg: object  # ModelConfig
  block_kwargs: tuple = ()  # (name, value) pairs passed to every block (deepnorm)

  @nn.compact
  def __call__(self, x, mask, bias, positions, deterministic=True):
    cfg = self.cfg
    block = Block
    if cfg.remat_policy != "none":
      # static_argnums counts self as 0: x=1, mask=2, bias=3, positions=4, cache=5, det=6.
      block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers,
                       static_argnums=(6,))
    kwargs = dict(self.block_kwargs)
    mode = cfg.albert_sharing
    if mode == "all":
      if cfg.scan_layers:
        scanned = nn.scan(
            lambda module, carry, mask, bias, positions, det: module(
                carry, mask, bias, positions, None, det),
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
            length=cfg.n_layers)
        x, _ = scanned(block(cfg, name="shared", **kwargs), x, mask, bias, positions, deterministic)
        return x
      shared = block(cfg, name="shared", **kwargs)
      for _ in range(cfg.n_layers):
        x, _ = shared(x, mask, bias, positions, None, deterministic)
      return x
    beta = kwargs["deepnorm"][1] if "deepnorm" in kwargs else None
    if mode == "attention":
      kwargs["shared_attn"] = Attention(cfg, beta=beta, name="shared_attn")
    elif mode == "ffn":
      kwargs["shared_mlp"] = MLP(cfg, beta=beta, name="shared_mlp")
    else:
      raise ValueError(f"SharedStack: albert_sharing={mode!r} shares nothing; use Stack")
    for i in range(cfg.n_layers):
      x, _ = block(cfg, name=f"layers_{i}", **kwargs)(x, mask, bias, positions, None, deterministic)
    return x
