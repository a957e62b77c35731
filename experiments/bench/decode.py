"""`decode`: tokens/s of cached greedy decoding, ours against transformers' `generate`.

Same weights (research.hf.load of the transformers model), same prompts, greedy, a fixed
number of new tokens (no stop token) and both with their KV cache. Ours is
`research.inference.generate.generate`: prefill and the decode loop in one jitted program.
The rows also say whether the two produced the same tokens.
"""

from __future__ import annotations

import numpy as np

from experiments.bench._common import median_times
from experiments.bench._models import LLAMA, Spec, build_pair
from research.inference.generate import generate
from research.inference.sampling import SamplingConfig
from research.models import registry

# Spec.seq_len is the prompt length and Spec.batch the number of prompts here.
SIZES = {
    "tiny": dict(reps=2, new_tokens=8, specs=[Spec("llama-tiny", LLAMA, 32, 2, 4, 2, 64, 64, 8, 2)]),
    "cpu": dict(reps=7, new_tokens=128, specs=[
        Spec("llama-nanogpt b1", LLAMA, 128, 4, 4, 4, 352, 65, 32, 1),
        Spec("llama-512 b1", LLAMA, 512, 8, 8, 2, 1408, 32000, 32, 1),
        Spec("llama-512 b8", LLAMA, 512, 8, 8, 2, 1408, 32000, 32, 8)]),
    "full": dict(reps=10, new_tokens=256, specs=[
        Spec("llama-1b b1", LLAMA, 2048, 16, 16, 8, 5632, 32000, 128, 1),
        Spec("llama-1b b32", LLAMA, 2048, 16, 16, 8, 5632, 32000, 128, 32)]),
}


def run(size: str, reps: int | None = None) -> list[dict]:
  import torch

  setting = SIZES[size]
  reps = reps or setting["reps"]
  new = setting["new_tokens"]
  rows = []
  for spec in setting["specs"]:
    torch_model, model, params = build_pair(spec)
    torch_model.eval()
    prompts = np.random.default_rng(0).integers(0, spec.vocab, (spec.batch, spec.seq_len)).astype(np.int32)
    sampling = SamplingConfig(max_new_tokens=new, temperature=0.0)
    prompts_pt = torch.as_tensor(prompts, dtype=torch.long)
    out = {}

    def ours():
      out["ours"] = np.asarray(generate(model, params, prompts, sampling=sampling))

    def reference():
      with torch.no_grad():
        tokens = torch_model.generate(
            prompts_pt, attention_mask=torch.ones_like(prompts_pt), max_new_tokens=new,
            min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
      out["torch"] = tokens[:, spec.seq_len:].numpy()

    seconds = median_times({"ours": ours, "torch": reference}, reps)
    generated = spec.batch * new
    rows.append({
        "config": spec.name, "params": registry.num_params(model.cfg), "prompt": spec.seq_len,
        "new tokens": new, "ours tokens/s": generated / seconds["ours"],
        "torch tokens/s": generated / seconds["torch"], "speedup": seconds["torch"] / seconds["ours"],
        "same tokens": bool(np.array_equal(out["ours"], out["torch"])),
    })
  return rows
