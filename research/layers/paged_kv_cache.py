"""Paged key/value cache (PagedAttention, Kwon et al. 2023, "Efficient Memory Management for
Large Language Model Serving with PagedAttention").

Keys and values live in one pool of fixed-size pages per layer, [K, P, page_size, H] (the
layout of the Pallas paged-attention kernels), stacked over layers as [L, K, P, page_size, H].
Each sequence (batch row) owns a row of the block table: entry j is the page holding its
slots [j * page_size, (j + 1) * page_size). Slot i of a sequence holds its i-th token, so
positions equal slots and nothing is padded inside a sequence. Which pages a row owns is
decided on the host (research.inference.pages); this module only reads and writes them.

Page 0 is a scratch page no sequence owns: table entries past a row's pages point at it,
so writes of padding tokens and of empty batch rows land there and are never read as
valid (the mask covers only slots below each row's length).

Attention over the pages has two implementations:

  gather  the row's pages are gathered into a contiguous [B, M * page_size, K, H] view and
          any attention backend runs over it with the usual AttentionMask (any length,
          window, ALiBi/T5 bias); works everywhere.
  pallas  for one-token decode steps without bias or window on GPU/TPU, the Pallas
          paged-attention kernel reads the pages in place (jax.experimental.pallas.ops
          gpu.paged_attention / tpu.paged_attention); other steps fall back to gather.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from research.layers.masks import AttentionMask

try:
  from jax.experimental.pallas.ops.gpu import paged_attention as _gpu_paged
except Exception:  # noqa: BLE001  (a missing kernel only disables the kernel path)
  _gpu_paged = None
try:
  from jax.experimental.pallas.ops.tpu import paged_attention as _tpu_paged
except Exception:  # noqa: BLE001
  _tpu_paged = None

SCRATCH_PAGE = 0
KERNELS = ("gather", "pallas")


def default_kernel() -> str:
  """'pallas' where the platform has a paged-attention kernel, else 'gather'."""
  platform = jax.default_backend()
  if (platform == "gpu" and _gpu_paged is not None) or (platform == "tpu" and _tpu_paged is not None):
    return "pallas"
  return "gather"


def _largest_divisor(n: int, limit: int) -> int:
  return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def pallas_decode(q_BNH, k_pages_KPSH, v_pages_KPSH, block_table_BM, lengths_B, *, scale: float,
                  interpret: bool = False):
  """One query token per row over its first lengths[b] slots, read from the pages in place."""
  q = (q_BNH * jnp.asarray(scale, q_BNH.dtype))  # the kernels do not scale the scores
  pages_per_row = block_table_BM.shape[1]
  if jax.default_backend() == "tpu" and not interpret:
    return _tpu_paged.paged_attention(
        q, k_pages_KPSH, v_pages_KPSH, lengths_B, block_table_BM,
        pages_per_compute_block=_largest_divisor(pages_per_row, 8))
  if _gpu_paged is None:
    raise RuntimeError("jax.experimental.pallas.ops.gpu.paged_attention does not import")
  splits = _largest_divisor(pages_per_row, 16)
  return _gpu_paged.paged_attention(
      q, k_pages_KPSH, v_pages_KPSH, block_table_BM, lengths_B, k_splits=splits,
      pages_per_compute_block=_largest_divisor(pages_per_row // splits, 8), interpret=interpret)


@flax.struct.dataclass
class PagedLayerCache:
  """One layer's page pool, the block table and each row's first slot written this step."""

  k_pages: jax.Array  # [K, P, page_size, H]
  v_pages: jax.Array  # [K, P, page_size, H]
  block_table: jax.Array  # int32[B, M]
  write_index: jax.Array  # int32[B]
  kernel: str = flax.struct.field(pytree_node=False, default="gather")
  # Run the Pallas kernel in its interpreter (tests on CPU).
  interpret: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def page_size(self) -> int:
    return self.k_pages.shape[2]

  def _write(self, pages, new_BTKH):
    slots = self.write_index[:, None] + jnp.arange(new_BTKH.shape[1], dtype=jnp.int32)
    column = slots // self.page_size
    width = self.block_table.shape[1]
    page = jnp.take_along_axis(self.block_table, jnp.minimum(column, width - 1), axis=1)
    # Slots past the table (padding of a full row) go to the scratch page.
    page = jnp.where(column < width, page, SCRATCH_PAGE)
    return pages.at[:, page, slots % self.page_size].set(
        jnp.moveaxis(new_BTKH, 2, 0).astype(pages.dtype))

  def _gather(self, pages):
    """[K, P, page_size, H] -> each row's slots in order, [B, M * page_size, K, H]."""
    rows = pages[:, self.block_table]  # [K, B, M, page_size, H]
    k, b, m, size, h = rows.shape
    return jnp.moveaxis(rows, 0, 3).reshape(b, m * size, k, h)

  def update(self, k_BTKH, v_BTKH):
    """Writes this step's keys/values; returns the new cache and each row's gathered view."""
    new = self.replace(k_pages=self._write(self.k_pages, k_BTKH), v_pages=self._write(self.v_pages, v_BTKH))
    return new, new._gather(new.k_pages), new._gather(new.v_pages)

  def attend(self, q_BTNH, k_BTKH, v_BTKH, mask: AttentionMask, bias, backend, **kwargs):
    """(new cache, out_BTNH, probs or None) for this step's queries over every written slot."""
    usable = (self.kernel == "pallas" and q_BTNH.shape[1] == 1 and (bias is None or not bias.active)
              and mask.window is None and not kwargs.get("dropout_rate"))
    if not usable:
      cache, k_all, v_all = self.update(k_BTKH, v_BTKH)
      out, probs = backend(q_BTNH, k_all, v_all, mask, bias, **kwargs)
      return cache, out, probs
    cache = self.replace(k_pages=self._write(self.k_pages, k_BTKH), v_pages=self._write(self.v_pages, v_BTKH))
    lengths = jnp.where(mask.q_segment[:, 0] != 0, self.write_index + 1, 0).astype(jnp.int32)
    out = pallas_decode(q_BTNH[:, 0], cache.k_pages, cache.v_pages, self.block_table, lengths,
                        scale=kwargs["scale"], interpret=self.interpret)
    return cache, out[:, None].astype(v_BTKH.dtype), None


@flax.struct.dataclass
class PagedKVCache:
  """Every layer's page pool plus the per-row block table and lengths (slots written)."""

  k_pages: jax.Array  # [L, K, P, page_size, H]
  v_pages: jax.Array  # [L, K, P, page_size, H]
  block_table: jax.Array  # int32[B, M]
  length: jax.Array  # int32[B]
  kernel: str = flax.struct.field(pytree_node=False, default="gather")
  interpret: bool = flax.struct.field(pytree_node=False, default=False)

  @classmethod
  def init(cls, cfg, batch: int, num_pages: int, page_size: int, pages_per_row: int,
           dtype=None, kernel: str | None = None, interpret: bool = False) -> "PagedKVCache":
    """An empty pool of `num_pages` pages (page 0 is scratch) for `batch` rows of at most
    `pages_per_row` pages each."""
    kernel = kernel or default_kernel()
    if kernel not in KERNELS:
      raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (cfg.n_layers, cfg.num_kv_heads, num_pages, page_size, cfg.dim_per_head)
    return cls(k_pages=jnp.zeros(shape, dtype), v_pages=jnp.zeros(shape, dtype),
               block_table=jnp.zeros((batch, pages_per_row), jnp.int32),
               length=jnp.zeros((batch,), jnp.int32), kernel=kernel, interpret=interpret)

  @property
  def page_size(self) -> int:
    return self.k_pages.shape[3]

  @property
  def max_len(self) -> int:
    return self.block_table.shape[1] * self.page_size

  def stacked_layers(self) -> PagedLayerCache:
    n_layers = self.k_pages.shape[0]
    stack = lambda x: jnp.broadcast_to(x, (n_layers, *x.shape))  # noqa: E731
    return PagedLayerCache(k_pages=self.k_pages, v_pages=self.v_pages,
                           block_table=stack(self.block_table), write_index=stack(self.length),
                           kernel=self.kernel, interpret=self.interpret)

  def begin_step(self, valid_BT: jax.Array, window: int | None = None):
    """Positions of this step's tokens, the mask over each row's slots, and two unused
    placeholders (the contiguous cache's segment/position buffers).

    Rows are right-padded: a row's valid tokens come first (a prompt shorter than the
    step's width), so its new length is length + valid.sum().
    """
    b, t = valid_BT.shape
    valid_BT = valid_BT.astype(jnp.int32)
    q_index = self.length[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
    end = self.length + valid_BT.sum(axis=1, dtype=jnp.int32)
    k_index = jnp.broadcast_to(jnp.arange(self.max_len, dtype=jnp.int32), (b, self.max_len))
    mask = AttentionMask(
        q_index=q_index, k_index=k_index, q_segment=valid_BT,
        k_segment=(k_index < end[:, None]).astype(jnp.int32), causal=True, window=window)
    return q_index, mask, None, k_index

  def finish_step(self, layers: PagedLayerCache, segment, position, valid_BT) -> "PagedKVCache":
    del segment, position
    return self.replace(k_pages=layers.k_pages, v_pages=layers.v_pages,
                        length=self.length + valid_BT.astype(jnp.int32).sum(axis=1, dtype=jnp.int32))
