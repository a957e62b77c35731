"""Host-side bookkeeping of the paged KV cache: which pages are free, who shares them.

`PageAllocator` hands out page ids 1 .. num_pages - 1 (page 0 is the device cache's
scratch page, research.layers.paged_kv_cache) and counts references: a page shared by
several sequences (a common prompt prefix) is freed when its last holder lets go, and a
holder that wants to write into a shared page first copies it (copy-on-write, as vLLM's
block manager does; Kwon et al. 2023, section 4.4). Freed pages go back on a LIFO free
list, so the next allocation reuses them first.

`PrefixIndex` remembers which tokens the pages filled by prompts hold, as a tree of pages
(each page's parent is the page before it in its sequence), so a new request whose prompt
starts with the same tokens can take those pages instead of recomputing them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from research.layers.paged_kv_cache import SCRATCH_PAGE

ROOT = -1  # parent of a sequence's first page


class OutOfPages(RuntimeError):
  """Every page is in use; nothing was allocated."""


class PageAllocator:
  def __init__(self, num_pages: int, page_size: int):
    if num_pages < 2:
      raise ValueError(f"num_pages={num_pages}: need at least 2 (page 0 is scratch)")
    self.num_pages = num_pages
    self.page_size = page_size
    self.refcount = np.zeros(num_pages, np.int64)
    # Popped from the end: the lowest ids first, then the most recently freed.
    self._free = list(range(num_pages - 1, SCRATCH_PAGE, -1))

  @property
  def num_free(self) -> int:
    return len(self._free)

  @property
  def capacity(self) -> int:
    """Pages a sequence can ever use (all but the scratch page)."""
    return self.num_pages - 1

  def alloc(self) -> int:
    if not self._free:
      raise OutOfPages(
          f"all {self.capacity} pages of {self.page_size} slots are in use; free a sequence, "
          "or build the engine with more num_pages")
    page = self._free.pop()
    self.refcount[page] = 1
    return page

  def share(self, page: int) -> None:
    if self.refcount[page] <= 0:
      raise ValueError(f"page {page} is not allocated; only live pages can be shared")
    self.refcount[page] += 1

  def release(self, page: int) -> bool:
    """Drops one reference; True when that freed the page."""
    if self.refcount[page] <= 0:
      raise ValueError(f"page {page} is released more often than it was taken")
    self.refcount[page] -= 1
    if self.refcount[page] == 0:
      self._free.append(page)
      return True
    return False

  def check(self, tables: Sequence[Sequence[int]] = ()) -> None:
    """Raises unless the free list and the reference counts agree with `tables`, the pages
    each live sequence holds: no page is both free and held, none is leaked or lost."""
    free = set(self._free)
    if len(free) != len(self._free) or SCRATCH_PAGE in free:
      raise AssertionError("the free list holds a page twice, or the scratch page")
    held = np.zeros(self.num_pages, np.int64)
    for table in tables:
      for page in table:
        held[page] += 1
    if not np.array_equal(held, self.refcount):
      bad = np.nonzero(held != self.refcount)[0][:8].tolist()
      raise AssertionError(f"reference counts disagree with the sequences' tables at pages {bad}")
    expected_free = {p for p in range(1, self.num_pages) if self.refcount[p] == 0}
    if free != expected_free:
      raise AssertionError("the free list disagrees with the reference counts")


class PrefixIndex:
  """Tokens held by prompt-filled pages, keyed by (parent page, page) for prefix matching."""

  def __init__(self, page_size: int):
    self.page_size = page_size
    self._tokens: dict[int, tuple[int, ...]] = {}
    self._children: dict[int, set[int]] = {}
    self._parent: dict[int, int] = {}

  def __len__(self) -> int:
    return len(self._tokens)

  def register(self, parent: int, page: int, tokens: Sequence[int]) -> None:
    """Records that `page`, which follows `parent` in its sequence, starts with `tokens`."""
    if not tokens:
      return
    self.forget(page)
    self._tokens[page] = tuple(int(t) for t in tokens)
    self._parent[page] = parent
    self._children.setdefault(parent, set()).add(page)

  def truncate(self, page: int, keep: int) -> None:
    """The page is about to be written from slot `keep` on: only its first `keep` tokens
    stay valid, and no page can follow it any more."""
    if page not in self._tokens or keep >= len(self._tokens[page]):
      return
    if keep == 0:
      self.forget(page)
      return
    self._tokens[page] = self._tokens[page][:keep]
    self._drop_children(page)

  def forget(self, page: int) -> None:
    """The page was freed (or is reused): drop it and everything indexed below it."""
    if page in self._tokens:
      del self._tokens[page]
      self._children.get(self._parent.pop(page), set()).discard(page)
    self._drop_children(page)

  def _drop_children(self, page: int) -> None:
    for child in self._children.pop(page, set()):
      self._tokens.pop(child, None)
      self._parent.pop(child, None)
      self._drop_children(child)

  def match(self, tokens: Sequence[int], limit: int) -> tuple[list[int], int]:
    """(pages, n): the indexed pages holding the longest prefix, at most `limit` tokens,
    of `tokens`, and n, how many tokens they hold. Only the last page may be partial."""
    pages, matched, parent = [], 0, ROOT
    size = self.page_size
    while matched < limit:
      want = tuple(tokens[matched:min(matched + size, limit)])
      best, best_len = None, 0
      for page in self._children.get(parent, ()):
        have = self._tokens[page]
        common = 0
        for a, b in zip(have, want):
          if a != b:
            break
          common += 1
        if common > best_len:
          best, best_len = page, common
      if best is None:
        break
      pages.append(best)
      matched += best_len
      if best_len < size:
        break
      parent = best
    return pages, matched
