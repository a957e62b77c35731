"""Paged KV cache, page allocator, prefix sharing and the continuous-batching engine.

Greedy tokens of the engine must equal the contiguous-cache `generate` and the argmax of an
uncached forward over the finished sequence, while requests of different lengths join and
leave the running batch, share prefix pages, and get preempted when pages run out.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.inference.engine import Engine
from research.inference.generate import generate, left_pad
from research.inference.pages import OutOfPages, PageAllocator, PrefixIndex
from research.inference.sampling import SamplingConfig, apply_repetition_penalty
from research.layers import attention_backends
from research.layers.masks import AttentionMask
from research.layers.paged_kv_cache import PagedLayerCache, pallas_decode
from research.models import registry
from support import tiny

# init_std 0.3: a random model whose greedy continuations vary from token to token.
FAMILIES = {
    "llama_gqa": dict(n_kv_heads=2),
    "bloom_alibi_chunked": dict(position="alibi", attention_impl="chunked", attention_block_q=4,
                                attention_block_k=8),
    "mistral_window": dict(n_kv_heads=1, sliding_window=5),
}
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 8, 9, 10, 11, 12, 13], [3, 4],
           [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30], [40], [5, 6, 7, 8, 50]]
NEW = [9, 4, 12, 6, 3, 8]  # different lengths: requests leave at different steps


@functools.lru_cache(maxsize=None)
def _model(name):
  cfg = tiny(init_std=0.3, **FAMILIES[name])
  return registry.build(cfg), registry.init_params(cfg, jax.random.key(0))


def _contiguous(name, prompts, new, **sampling):
  model, params = _model(name)
  ids, mask = left_pad(prompts)
  out = np.asarray(generate(model, params, ids, mask, SamplingConfig(max_new_tokens=max(new), **sampling)))
  return [row[:n].tolist() for row, n in zip(out, new)]


def _engine(name, sampling=None, **kw):
  model, params = _model(name)
  return Engine(model, params, sampling or SamplingConfig(max_new_tokens=12), max_len=32, **kw)


def _run(engine, prompts=PROMPTS, new=NEW, seeds=None):
  """Runs the requests step by step, checking the page bookkeeping after every step."""
  ids = [engine.submit(p, max_new_tokens=n, seed=None if seeds is None else seeds[i])
         for i, (p, n) in enumerate(zip(prompts, new))]
  batches = []
  while engine.waiting or engine.running:
    engine.step()
    engine.check()
    batches.append(sorted(r.id for r in engine.running))
  return [engine.finished[i].output for i in ids], batches


@pytest.mark.parametrize("name", FAMILIES)
def test_paged_greedy_equals_contiguous_and_uncached(name):
  engine = _engine(name, max_batch=3, page_size=4)
  out, batches = _run(engine)
  assert out == _contiguous(name, PROMPTS, NEW)
  # Requests joined a running batch and left it at different steps.
  assert any(0 in b and 3 in b for b in batches) and batches[0] == [0, 1, 2]
  # The uncached forward over each finished sequence predicts every new token (argmax).
  model, params = _model(name)
  width = 32
  ids = np.zeros((len(PROMPTS), width), np.int32)
  mask = np.zeros_like(ids)
  for row, (p, o) in enumerate(zip(PROMPTS, out)):
    seq = p + o
    ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
  logits = np.asarray(jax.jit(lambda p, i, m: model.apply({"params": p}, input_ids=i, attention_mask=m))(
      params, ids, mask))
  for row, (p, o) in enumerate(zip(PROMPTS, out)):
    predicted = logits[row, len(p) - 1:len(p) + len(o) - 1].argmax(-1).tolist()
    assert predicted == o


def test_prefix_sharing_shares_pages_and_keeps_the_tokens():
  shared = _engine("llama_gqa", max_batch=3, page_size=4)
  # Prompt 1 starts with all 7 tokens of prompt 0: one full page and a partial one.
  ids = [shared.submit(PROMPTS[0], max_new_tokens=9), shared.submit(PROMPTS[1], max_new_tokens=4)]
  shared.step()
  first, second = (shared.finished.get(i) or next(r for r in shared.running if r.id == i) for i in ids)
  assert second.pages[0] == first.pages[0]  # the full page is shared ...
  assert shared.allocator.refcount[first.pages[0]] == 2
  assert second.pages[1] != first.pages[1]  # ... the partial one was copied before writing
  shared.run()
  assert shared.stats["shared_tokens"] == 7 and shared.stats["copied_pages"] >= 1
  plain = _engine("llama_gqa", max_batch=3, page_size=4, prefix_sharing=False)
  plain_ids = [plain.submit(PROMPTS[0], max_new_tokens=9), plain.submit(PROMPTS[1], max_new_tokens=4)]
  plain.run()
  expected = _contiguous("llama_gqa", PROMPTS[:2], [9, 4])
  assert [shared.finished[i].output for i in ids] == expected
  assert [plain.finished[i].output for i in plain_ids] == expected
  assert plain.stats["shared_tokens"] == 0
  assert shared.stats["prefill_tokens"] == plain.stats["prefill_tokens"] - 7


def test_freed_pages_are_reused():
  engine = _engine("llama_gqa", max_batch=1, page_size=4, num_pages=5)
  a = engine.submit([1, 2, 3, 4, 5, 6], max_new_tokens=3)
  engine.step()
  pages_a = list(engine.running[0].pages)
  engine.run()
  b = engine.submit([7, 8, 9, 10, 11], max_new_tokens=3)
  engine.step()
  assert engine.running[0].id == b and set(engine.running[0].pages) == set(pages_a)
  engine.run()
  assert engine.allocator.num_free == 4 and a in engine.finished


def test_out_of_pages_waits_or_preempts_and_keeps_the_tokens():
  # 7 usable pages of 4 slots cannot hold the six requests (up to 6 pages each) at once.
  engine = _engine("llama_gqa", max_batch=4, page_size=4, num_pages=8)
  out, batches = _run(engine)
  assert out == _contiguous("llama_gqa", PROMPTS, NEW)
  assert engine.stats["preemptions"] > 0
  with pytest.raises(ValueError, match="needs 8 pages of 4 slots, but the pool has only 7"):
    engine.submit(list(range(20)), max_new_tokens=12)
  with pytest.raises(ValueError, match="exceeds the engine's max_len=32"):
    engine.submit(list(range(30)), max_new_tokens=12)


def test_page_allocator_errors_and_invariants():
  alloc = PageAllocator(4, page_size=2)
  pages = [alloc.alloc() for _ in range(3)]
  assert sorted(pages) == [1, 2, 3]
  with pytest.raises(OutOfPages, match="all 3 pages of 2 slots are in use"):
    alloc.alloc()
  alloc.share(pages[0])
  assert not alloc.release(pages[0]) and alloc.release(pages[0])
  assert alloc.alloc() == pages[0]  # the freed page comes back first
  alloc.release(pages[1])
  with pytest.raises(ValueError, match="released more often"):
    alloc.release(pages[1])
  with pytest.raises(AssertionError, match="disagree"):
    alloc.check([[pages[0], pages[2]], [pages[2]]])
  alloc.check([[pages[0], pages[2]]])


def test_prefix_index_matches_pages_and_forgets_overwritten_tokens():
  index = PrefixIndex(page_size=3)
  index.register(-1, 5, [1, 2, 3])
  index.register(5, 6, [4, 5])
  assert index.match([1, 2, 3, 4, 5, 9], limit=5) == ([5, 6], 5)
  assert index.match([1, 2, 3, 4, 7], limit=5) == ([5, 6], 4)
  assert index.match([1, 2, 9], limit=3) == ([5], 2)
  index.truncate(6, 1)  # slot 1 of page 6 is about to be overwritten
  assert index.match([1, 2, 3, 4, 5], limit=5) == ([5, 6], 4)
  index.forget(5)  # freeing a page drops the pages indexed below it
  assert index.match([1, 2, 3, 4], limit=4) == ([], 0) and len(index) == 0


def test_seeded_sampling_does_not_depend_on_the_batch():
  sampling = SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9)
  seeds = [11, 12, 13, 14, 15, 16]
  engine = _engine("llama_gqa", sampling, max_batch=3, page_size=4)
  together, _ = _run(engine, seeds=seeds)
  # One request at a time, in an engine of one slot (its pool as large as the batched one's,
  # so the prefill programs are the same).
  pool = engine.allocator.num_pages
  alone = [_run(_engine("llama_gqa", sampling, max_batch=1, page_size=4, num_pages=pool), [p], [n], [s])[0][0]
           for p, n, s in zip(PROMPTS[:2], NEW[:2], seeds[:2])]
  assert together[:2] == alone
  model, params = _model("llama_gqa")
  ids, mask = left_pad(PROMPTS)
  contiguous = np.asarray(generate(model, params, ids, mask, sampling, seeds=seeds))
  assert together == [row[:n].tolist() for row, n in zip(contiguous, NEW)]
  other, _ = _run(_engine("llama_gqa", sampling, max_batch=3, page_size=4), seeds=[s + 100 for s in seeds])
  assert other != together


def test_repetition_penalty_in_generate_and_engine():
  logits = jnp.array([[2.0, -1.0, 0.5]])
  penalised = apply_repetition_penalty(logits, jnp.array([[True, True, False]]), 2.0)
  np.testing.assert_allclose(penalised, [[1.0, -2.0, 0.5]])
  sampling = SamplingConfig(max_new_tokens=12, repetition_penalty=1e4)
  engine_out, _ = _run(_engine("llama_gqa", sampling, max_batch=3, page_size=4), new=[12] * 6)
  model, params = _model("llama_gqa")
  ids, mask = left_pad(PROMPTS)
  assert engine_out == np.asarray(generate(model, params, ids, mask, sampling)).tolist()
  for prompt, out in zip(PROMPTS, engine_out):
    assert len(set(prompt + out)) == len(prompt) + len(out)  # a huge penalty never repeats
  plain = _contiguous("llama_gqa", PROMPTS, [12] * 6)
  assert any(len(set(p + o)) < len(p) + len(o) for p, o in zip(PROMPTS, plain))


def test_pallas_paged_decode_equals_the_gather_path():
  k_heads, pages, size, h, n, b = 2, 10, 4, 8, 4, 3
  keys = jax.random.split(jax.random.key(0), 5)
  k_pages, v_pages = (jax.random.normal(k, (k_heads, pages, size, h)) for k in keys[:2])
  table = jnp.array([[3, 5, 0, 0], [1, 2, 4, 7], [0, 0, 0, 0]], jnp.int32)
  lengths = jnp.array([5, 14, 0], jnp.int32)  # slots written before this step
  q = jax.random.normal(keys[2], (b, 1, n, h))
  k_new, v_new = (jax.random.normal(k, (b, 1, k_heads, h)) for k in keys[3:])
  slots = jnp.broadcast_to(jnp.arange(16), (b, 16))
  valid = jnp.array([[1], [1], [0]], jnp.int32)  # row 2 is an empty batch slot
  mask = AttentionMask(q_index=lengths[:, None], k_index=slots, q_segment=valid,
                       k_segment=(slots <= lengths[:, None]).astype(jnp.int32))
  outs = []
  for kernel in ("gather", "pallas"):
    cache = PagedLayerCache(k_pages, v_pages, table, lengths, kernel=kernel, interpret=True)
    new_cache, out, _ = cache.attend(q, k_new, v_new, mask, None, attention_backends.xla_attention, scale=0.3)
    outs.append(out)
    np.testing.assert_array_equal(new_cache.k_pages[:, 5, 1], k_new[0, 0])  # slot 5 -> page 5, offset 1
  np.testing.assert_allclose(outs[1], outs[0], atol=1e-5)
  assert float(jnp.abs(outs[1][2]).max()) == 0.0
  direct = pallas_decode(q[:, 0], k_pages, v_pages, table, jnp.array([3, 9, 0], jnp.int32), scale=0.3,
                         interpret=True)
  assert direct.shape == (b, n, h)
