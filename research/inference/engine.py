"""A small serving engine: continuous batching over a paged KV cache.

    engine = Engine(model, params, SamplingConfig(max_new_tokens=64), max_batch=8, page_size=16)
    ids = [engine.submit(prompt) for prompt in prompts]     # token id lists
    outputs = engine.run()                                  # {request id: new token ids}

Requests wait in a FIFO queue. Each `step()` admits waiting requests into free batch slots
while the pool has pages for their prompts (continuous batching, Yu et al. 2022, "Orca":
requests join and leave the running batch at every iteration), prefills each newly admitted
prompt, then decodes one token for every running request in one batched call. A request
leaves when it emits a stop token or reaches its max_new_tokens, and its pages go back to
the pool at once.

Pages (research.inference.pages) are allocated as sequences grow. A prompt that starts
with tokens some live page already holds shares that page instead of recomputing it, and
copies it before writing into it (copy-on-write). When a running sequence needs a page and
none is free, the most recently admitted sequence is preempted: its pages are freed and it
goes back to the head of the queue with the tokens it produced, to be recomputed later
(vLLM's recompute preemption, Kwon et al. 2023, section 4.5). A request that could never
fit, even alone, is refused at `submit`. Pages are never handed out twice (`check()`).

Sampling keys are per request (research.inference.sampling), so a request's tokens do not
depend on the batch it ran in; with the same seeds they equal `generate`'s.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.inference.pages import ROOT, OutOfPages, PageAllocator, PrefixIndex
from research.inference.sampling import SamplingConfig, sample, step_keys
from research.layers.paged_kv_cache import PagedKVCache


@dataclasses.dataclass(eq=False)  # identity: the engine looks requests up in its slots
class Request:
  id: int
  prompt: list[int]
  max_new_tokens: int
  stop_tokens: frozenset[int]
  key_data: np.ndarray  # uint32 data of this request's PRNG key
  output: list[int] = dataclasses.field(default_factory=list)
  pages: list[int] = dataclasses.field(default_factory=list)
  length: int = 0  # cache slots written
  admitted: int = -1  # admission order, for choosing whom to preempt

  @property
  def tokens(self) -> list[int]:
    return self.prompt + self.output

  @property
  def done(self) -> bool:
    return len(self.output) >= self.max_new_tokens or bool(self.output and self.output[-1] in self.stop_tokens)


def _bucket(n: int) -> int:
  """Prefill widths are powers of two (at least 8): one compilation per bucket."""
  return max(8, 1 << (n - 1).bit_length())


class Engine:
  def __init__(self, model, params, sampling: SamplingConfig | None = None, *, max_batch: int = 8,
               page_size: int = 16, max_len: int | None = None, num_pages: int | None = None,
               prefix_sharing: bool = True, kernel: str | None = None):
    cfg = model.cfg
    self.model, self.params = model, params
    self.sampling = sampling or SamplingConfig()
    self.max_len = max_len or cfg.max_seq_len
    if cfg.position == "learned" and self.max_len > cfg.max_seq_len:
      raise ValueError(f"max_len={self.max_len} exceeds the learned position table (max_seq_len={cfg.max_seq_len})")
    self.page_size = page_size
    self.pages_per_row = math.ceil(self.max_len / page_size)
    num_pages = num_pages or max_batch * self.pages_per_row + 1
    self.allocator = PageAllocator(num_pages, page_size)
    self.index = PrefixIndex(page_size) if prefix_sharing else None
    cache = PagedKVCache.init(cfg, max_batch, num_pages, page_size, self.pages_per_row, kernel=kernel)
    self._k, self._v, self.kernel = cache.k_pages, cache.v_pages, cache.kernel
    self.slots: list[Request | None] = [None] * max_batch
    self.waiting: collections.deque[Request] = collections.deque()
    self.finished: dict[int, Request] = {}
    self.stats = collections.Counter()
    self._vocab = cfg.vocab_size
    self._seen = np.zeros((max_batch, self._vocab), bool) if self.sampling.tracks_tokens else None
    self._next_id = 0
    self._admissions = 0

  # ---------------------------------------------------------------------------- requests

  def submit(self, prompt: Sequence[int], *, max_new_tokens: int | None = None,
             seed: int | None = None, stop_tokens: Sequence[int] | None = None) -> int:
    """Queues a request; returns its id. Refuses one that could not fit even alone."""
    prompt = [int(t) for t in prompt]
    if not prompt:
      raise ValueError("a prompt needs at least one token")
    new = self.sampling.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    total = len(prompt) + new
    if total > self.max_len:
      raise ValueError(f"prompt ({len(prompt)}) + max_new_tokens ({new}) = {total} exceeds the "
                       f"engine's max_len={self.max_len}")
    pages = math.ceil(total / self.page_size)
    if pages > self.allocator.capacity:
      raise ValueError(f"the request needs {pages} pages of {self.page_size} slots, but the pool has "
                       f"only {self.allocator.capacity}; build the engine with more num_pages")
    rid = self._next_id
    self._next_id += 1
    key = (jax.random.key(seed) if seed is not None
           else jax.random.fold_in(jax.random.key(self.sampling.seed), rid))
    stop = self.sampling.stop_tokens if stop_tokens is None else tuple(stop_tokens)
    self.waiting.append(Request(rid, prompt, new, frozenset(int(t) for t in stop),
                                np.asarray(jax.random.key_data(key))))
    return rid

  @property
  def running(self) -> list[Request]:
    return [r for r in self.slots if r is not None]

  def step(self) -> list[Request]:
    """One scheduler iteration: admit and prefill, then decode one token for every running
    request. Returns the requests that finished."""
    finished = self._admit()
    if self.running:
      finished += self._decode()
    return finished

  def run(self) -> dict[int, list[int]]:
    """Steps until nothing waits or runs; returns every finished request's new tokens."""
    while self.waiting or self.running:
      self.step()
    return {rid: list(r.output) for rid, r in self.finished.items()}

  def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int] | None = None) -> list[list[int]]:
    ids = [self.submit(p, seed=None if seeds is None else seeds[i]) for i, p in enumerate(prompts)]
    self.run()
    return [self.finished[i].output for i in ids]

  def check(self) -> None:
    """Raises unless every page is either free or held exactly as the sequences say."""
    self.allocator.check([r.pages for r in self.running])

  # ------------------------------------------------------------------------------- pages

  def _copy_page(self, src: int, dst: int) -> None:
    self._k, self._v = _copy_page(self._k, self._v, src, dst)
    self.stats["copied_pages"] += 1

  def _make_writable(self, req: Request, end: int) -> None:
    """Gives `req` its own page for every slot in [req.length, end): allocates missing pages
    and copies shared ones. May raise OutOfPages (what it took so far stays with req)."""
    size = self.page_size
    for column in range(req.length // size, math.ceil(end / size)):
      if column == len(req.pages):
        req.pages.append(self.allocator.alloc())
        continue
      page = req.pages[column]
      if self.allocator.refcount[page] > 1:
        copy = self.allocator.alloc()
        self._copy_page(page, copy)
        self.allocator.release(page)
        req.pages[column] = copy
      elif self.index is not None:
        self.index.truncate(page, max(req.length - column * size, 0))

  def _release(self, req: Request) -> None:
    for page in req.pages:
      if self.allocator.release(page) and self.index is not None:
        self.index.forget(page)
    req.pages, req.length = [], 0
    self.slots[self.slots.index(req)] = None

  def _preempt(self, req: Request) -> None:
    self._release(req)
    self.waiting.appendleft(req)
    self.stats["preemptions"] += 1

  def _table(self, req: Request) -> np.ndarray:
    row = np.zeros(self.pages_per_row, np.int32)
    row[:len(req.pages)] = req.pages
    return row

  # ---------------------------------------------------------------------------- prefill

  def _admit(self) -> list[Request]:
    finished = []
    while self.waiting and None in self.slots:
      req = self.waiting[0]
      tokens = req.tokens
      shared, n_shared = ([], 0) if self.index is None else self.index.match(tokens, len(tokens) - 1)
      # Pages for the unshared tokens, plus a copy of a partially shared last page.
      needed = math.ceil(len(tokens) / self.page_size) - n_shared // self.page_size
      if needed > self.allocator.num_free:
        break  # it waits for running requests to finish
      self.waiting.popleft()
      for page in shared:
        self.allocator.share(page)
      req.pages, req.length = list(shared), n_shared
      req.admitted, self._admissions = self._admissions, self._admissions + 1
      slot = self.slots.index(None)
      self.slots[slot] = req
      self.stats["shared_tokens"] += n_shared
      self._prefill(slot, req, first_owned=n_shared // self.page_size)
      if req.done:
        finished.append(self._finish(req))
    return finished

  def _prefill(self, slot: int, req: Request, first_owned: int) -> None:
    tokens = req.tokens[req.length:]
    n = len(tokens)
    self._make_writable(req, req.length + n)
    width = _bucket(n)
    ids = np.zeros((1, width), np.int32)
    ids[0, :n] = tokens
    valid = (np.arange(width) < n).astype(np.int32)[None]
    seen = None
    if self._seen is not None:
      self._seen[slot] = False
      self._seen[slot, req.tokens] = True
      seen = self._seen[slot:slot + 1]
    token, self._k, self._v = _step_fn(self.model, self.sampling, self.kernel)(
        self.params, self._k, self._v, self._table(req)[None], np.array([req.length], np.int32),
        ids, valid, req.key_data[None], np.array([len(req.output)], np.int32), seen)
    req.length += n
    self.stats["prefill_tokens"] += n
    self._append(slot, req, int(token[0]))
    if self.index is not None:
      size = self.page_size
      for column in range(first_owned, math.ceil(len(req.prompt) / size)):
        parent = req.pages[column - 1] if column else ROOT
        self.index.register(parent, req.pages[column], req.prompt[column * size:(column + 1) * size])

  # ----------------------------------------------------------------------------- decode

  def _decode(self) -> list[Request]:
    for req in sorted(self.running, key=lambda r: r.admitted):
      while req in self.slots:
        try:
          self._make_writable(req, req.length + 1)
          break
        except OutOfPages:
          self._preempt(max(self.running, key=lambda r: r.admitted))
    rows = len(self.slots)
    tables = np.zeros((rows, self.pages_per_row), np.int32)
    lengths, steps = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
    tokens, valid = np.zeros((rows, 1), np.int32), np.zeros((rows, 1), np.int32)
    keys = np.zeros((rows, *self._key_shape()), np.uint32)
    for b, req in enumerate(self.slots):
      if req is not None:
        tables[b], lengths[b], steps[b] = self._table(req), req.length, len(req.output)
        tokens[b, 0], valid[b, 0], keys[b] = req.output[-1], 1, req.key_data
    if not valid.any():
      return []
    new, self._k, self._v = _step_fn(self.model, self.sampling, self.kernel)(self.params, self._k, self._v, tables, lengths, tokens, valid, keys,
                               steps, self._seen)
    new = np.asarray(new)
    self.stats["decode_steps"] += 1
    finished = []
    for b, req in enumerate(self.slots):
      if req is not None:
        req.length += 1
        self._append(b, req, int(new[b]))
        if req.done:
          finished.append(self._finish(req))
    return finished

  def _key_shape(self) -> tuple[int, ...]:
    return np.asarray(jax.random.key_data(jax.random.key(0))).shape

  def _append(self, slot: int, req: Request, token: int) -> None:
    req.output.append(token)
    if self._seen is not None:
      self._seen[slot, token] = True

  def _finish(self, req: Request) -> Request:
    self._release(req)
    self.finished[req.id] = req
    return req


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _copy_page(k_pages, v_pages, src, dst):
  """Copy-on-write: page src's slots into page dst, in every layer."""
  return k_pages.at[:, :, dst].set(k_pages[:, :, src]), v_pages.at[:, :, dst].set(v_pages[:, :, src])


@functools.lru_cache(maxsize=32)
def _step_fn(model, sampling: SamplingConfig, kernel: str):
  """jit(params, pools, tables, lengths, ids, valid, keys, steps, seen) -> (next tokens, pools):
  feeds each row's tokens through the model over its pages and samples after its last
  valid token. The pools are donated, so the cache is updated in place. Prefill (one row,
  a bucketed width) and decode (every slot, one token) are two shapes of the same function,
  shared by every engine of the same model and sampling."""

  def run(params, k_pages, v_pages, tables, lengths, ids, valid, key_data, steps, seen):
    cache = PagedKVCache(k_pages=k_pages, v_pages=v_pages, block_table=tables, length=lengths,
                         kernel=kernel)
    logits, cache = model.apply({"params": params}, input_ids=ids, attention_mask=valid, cache=cache)
    last = jnp.maximum(valid.sum(axis=1) - 1, 0)
    keys = step_keys(jax.random.wrap_key_data(key_data), steps)
    token = sample(logits[jnp.arange(ids.shape[0]), last], keys, sampling, seen)
    return token, cache.k_pages, cache.v_pages

  return jax.jit(run, donate_argnums=(1, 2))
