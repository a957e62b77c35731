"""The benchmark models: one transformers model and the same weights as ours.

Each benchmark config is built in transformers (random weights), written with
`save_pretrained` and read back with `research.hf.load`, so both sides compute exactly the
same function from the same parameters (the benchmarks report the two first-step losses as
a check).
"""

from __future__ import annotations

import dataclasses
import tempfile

# The transformers classes the benchmarks compare against.
LLAMA = "LlamaForCausalLM"
GPT2 = "GPT2LMHeadModel"


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str
  family: str  # LLAMA or GPT2
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  d_ff: int
  vocab: int
  seq_len: int
  batch: int
  # ModelConfig fields for our side (the attention backend and its tiles, ...), as pairs.
  ours: tuple[tuple[str, object], ...] = ()

  def hf_config(self):
    import transformers

    if self.family == LLAMA:
      return transformers.LlamaConfig(
          vocab_size=self.vocab, hidden_size=self.d_model, intermediate_size=self.d_ff,
          num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
          num_key_value_heads=self.n_kv_heads, max_position_embeddings=max(self.seq_len * 4, 256),
          tie_word_embeddings=False, attn_implementation="sdpa")
    return transformers.GPT2Config(
        vocab_size=self.vocab, n_embd=self.d_model, n_layer=self.n_layers, n_head=self.n_heads,
        n_inner=self.d_ff, n_positions=max(self.seq_len * 4, 256), attn_implementation="sdpa",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)


def build_pair(spec: Spec, seed: int = 0, **overrides):
  """(torch model in train mode, our model, our params) with identical weights.

  `overrides` are ModelConfig fields for our side (scan_layers, remat, dtype, ...), on top of
  `spec.ours`."""
  import torch
  import transformers

  from research import hf

  torch.manual_seed(seed)
  torch_model = getattr(transformers, spec.family)(spec.hf_config())
  with tempfile.TemporaryDirectory() as tmp:
    torch_model.save_pretrained(tmp)
    model, params = hf.load(tmp, **{**dict(spec.ours), **overrides})
  torch_model.train()
  return torch_model, model, params
