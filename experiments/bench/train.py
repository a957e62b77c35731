"""`train`: tokens/s and MFU of a full train step, ours against transformers + torch.

The step is forward, backward, global-norm clipping and an AdamW update, on the same
configuration, batch and weights, timed alternately in one process (medians after warm-up).
Ours is `research.train.step.make_train_step` jitted with buffer donation; the reference is
transformers' model (sdpa attention, eval-free train mode, no dropout) with
`torch.optim.AdamW` and `clip_grad_norm_`. MFU is model FLOPs (PaLM's formula,
`ModelConfig.flops_per_token`) over the measured matmul ceiling on CPU (`hardware.peak_flops`).
Ours is timed with the scanned layer stack (the default) and with the Python-loop stack; the
tokens/s, GFLOP/s and MFU columns are the faster of the two.
"""

from __future__ import annotations

import jax
import numpy as np

from experiments.bench._common import median_times
from experiments.bench._models import GPT2, LLAMA, Spec, build_pair
from research import hardware
from research.config.optim import OptimizerConfig
from research.config.train import TrainConfig
from research.models import registry
from research.train import objectives, optimizer as opt_lib
from research.train.state import TrainState
from research.train.step import make_train_step

# At 512 tokens ours runs the `chunked` (flash) attention in 128 x 128 tiles: on CPU it beat
# `xla` by 10-15% there, skipping the tiles above the causal diagonal (at 64 tokens, one tile,
# `xla` is the faster).
CHUNKED_128 = (("attention_impl", "chunked"), ("attention_block_q", 128), ("attention_block_k", 128))
# nanoGPT's CPU recipe (4 layers, 128 wide, context 64, batch 12, character vocabulary) and
# the d_model 512 size; LLaMA style (RMSNorm, SwiGLU, RoPE, GQA at 512) and GPT-2 style.
SIZES = {
    "tiny": dict(reps=2, specs=[
        Spec("llama-tiny", LLAMA, 32, 2, 4, 2, 64, 64, 16, 2),
        Spec("gpt2-tiny", GPT2, 32, 2, 4, 4, 128, 64, 16, 2)]),
    "cpu": dict(reps=9, specs=[
        Spec("llama-nanogpt", LLAMA, 128, 4, 4, 4, 352, 65, 64, 12),
        Spec("gpt2-nanogpt", GPT2, 128, 4, 4, 4, 512, 65, 64, 12),
        Spec("llama-512", LLAMA, 512, 8, 8, 2, 1408, 32000, 512, 4, CHUNKED_128),
        Spec("gpt2-512", GPT2, 512, 8, 8, 8, 2048, 32000, 512, 4, CHUNKED_128)]),
    # Accelerators: bf16 compute on fp32 parameters, the fastest attention backend for the
    # device (`auto`: cudnn on NVIDIA GPUs), remat of everything but the matmuls. The torch
    # model stays on the CPU, so it is not timed at this size.
    "full": dict(reps=20, torch=False, specs=[
        Spec("llama-1b", LLAMA, 2048, 16, 16, 8, 5632, 32000, 2048, 8,
             (("attention_impl", "auto"), ("dtype", "bfloat16"), ("remat", "dots_no_batch")))]),
}
OPTIMIZER = OptimizerConfig(name="adamw", lr=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                            schedule="constant", warmup_steps=0, grad_clip=1.0)


def _batch(spec: Spec, seed: int = 0) -> dict[str, np.ndarray]:
  ids = np.random.default_rng(seed).integers(0, spec.vocab, (spec.batch, spec.seq_len + 1)).astype(np.int32)
  return {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
          "loss_mask": np.ones((spec.batch, spec.seq_len), np.float32),
          "segment_ids": np.ones((spec.batch, spec.seq_len), np.int32)}


def ours(model, params, batch):
  """A `() -> loss` closure running one jitted, donated train step on the state it keeps."""
  tx, lr = opt_lib.build(OPTIMIZER, 1000)
  step = jax.jit(make_train_step(model, objectives.causal_lm, tx, lr, TrainConfig()), donate_argnums=0)
  holder = {"state": TrainState.create(params, tx, jax.random.key(0))}
  device_batch = jax.device_put(batch)

  def run():
    holder["state"], metrics = step(holder["state"], device_batch)
    return float(jax.block_until_ready(metrics["loss"]))

  return run


def reference(torch_model, batch):
  import torch

  optimizer = torch.optim.AdamW(torch_model.parameters(), lr=OPTIMIZER.lr,
                                betas=(OPTIMIZER.b1, OPTIMIZER.b2), eps=OPTIMIZER.eps,
                                weight_decay=OPTIMIZER.weight_decay)
  ids = torch.as_tensor(batch["input_ids"], dtype=torch.long)
  targets = torch.as_tensor(batch["targets"], dtype=torch.long)

  def run():
    logits = torch_model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(torch_model.parameters(), OPTIMIZER.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)

  return run


def run(size: str, reps: int | None = None) -> list[dict]:
  setting = SIZES[size]
  reps = reps or setting["reps"]
  with_torch = setting.get("torch", True)
  rows = []
  for spec in setting["specs"]:
    torch_model, model, params = build_pair(spec)
    _, looped, looped_params = build_pair(spec, scan_layers=False)
    batch = _batch(spec)
    fns = {"ours": ours(model, params, batch), "ours unscanned": ours(looped, looped_params, batch)}
    if with_torch:
      fns["torch"] = reference(torch_model, batch)
    first = {name: fn() for name, fn in fns.items()}  # the same weights: the same first loss
    seconds = median_times(fns, reps)
    best = min(("ours", "ours unscanned"), key=seconds.get)
    tokens = spec.batch * spec.seq_len
    flops = model.cfg.flops_per_token(spec.seq_len) * tokens
    peak, _ = hardware.peak_flops(model.cfg.dtype)
    row = {"config": spec.name, "attention": model.cfg.attention_impl, "dtype": model.cfg.dtype,
           "params": registry.num_params(model.cfg), "tokens/step": tokens, "first loss ours": first["ours"],
           "ours ms": seconds["ours"] * 1e3, "ours unscanned ms": seconds["ours unscanned"] * 1e3,
           "ours tokens/s": tokens / seconds[best], "ours GFLOP/s": flops / seconds[best] / 1e9,
           "ours MFU": flops / seconds[best] / peak}
    if with_torch:
      row.update({
          "first loss torch": first["torch"], "torch ms": seconds["torch"] * 1e3,
          "speedup": seconds["torch"] / seconds["ours"],
          "speedup unscanned": seconds["torch"] / seconds["ours unscanned"],
          "torch tokens/s": tokens / seconds["torch"], "torch GFLOP/s": flops / seconds["torch"] / 1e9,
          "torch MFU": flops / seconds["torch"] / peak})
    rows.append(row)
  return rows
