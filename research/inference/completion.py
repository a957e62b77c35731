"""Text in, text out: load a trained run or a Hugging Face directory, complete prompts.

    lm = completion.load_run("runs/smoke")            # or completion.load_hf("path/to/hf_dir")
    texts = completion.complete(lm, ["To be, or"], SamplingConfig(max_new_tokens=64))

The thin CLI over this is `python -m research.generate`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from research.inference.engine import Engine
from research.inference.generate import generate, left_pad
from research.inference.sampling import SamplingConfig
from research.tokenizers import Tokenizer

ENGINES = ("paged", "contiguous")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  model: object  # flax Module with .cfg
  params: object
  tokenizer: Tokenizer
  # Whether training documents began with BOS (a run's data.add_bos); prompts then do too.
  add_bos: bool = False


def _with_model_overrides(model, overrides: dict):
  """The same parameters under a config with `overrides` (fields that leave params alone)."""
  if not overrides:
    return model
  from research.models import registry

  return registry.build(model.cfg.replace(**overrides))


def load_run(run_dir: str | pathlib.Path, step: int | None = None, **model_overrides) -> LoadedModel:
  """A run directory's newest (or `step`'s) params and its saved tokenizer.

  `model_overrides` are ModelConfig fields that do not change the parameters, such as
  `attention_impl` or `dtype`.
  """
  from research import pretrained, tokenizers

  config, model, params = pretrained.restore(run_dir, step=step)
  tokenizer_dir = pathlib.Path(run_dir) / "tokenizer"
  if not tokenizer_dir.exists():
    raise FileNotFoundError(f"{tokenizer_dir} does not exist: the run saved no tokenizer")
  return LoadedModel(_with_model_overrides(model, model_overrides), params,
                     tokenizers.load(tokenizer_dir), add_bos=config.data.add_bos)


def load_hf(path: str | pathlib.Path, **model_overrides) -> LoadedModel:
  """A Hugging Face `save_pretrained` directory (safetensors) and the tokenizer beside it."""
  from research import hf

  model, params = hf.load(path, **model_overrides)
  return LoadedModel(model, params, hf.load_tokenizer(path))


def encode(lm: LoadedModel, prompts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
  """Token ids of each prompt (BOS first when `add_bos`, default: as the model was trained)."""
  tok = lm.tokenizer
  bos = lm.add_bos if add_bos is None else add_bos
  out = []
  for text in prompts:
    ids = ([tok.bos_id] if bos and tok.bos_id is not None else []) + tok.encode(text)
    if not ids:
      raise ValueError(f"prompt {text!r} encodes to no tokens; pass add_bos=True or a longer prompt")
    out.append(ids)
  return out


def complete_ids(lm: LoadedModel, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *,
                 engine: str = "paged", seeds: Sequence[int] | None = None, max_batch: int = 8,
                 page_size: int = 16) -> list[list[int]]:
  """New token ids per prompt, up to and including a stop token."""
  if engine not in ENGINES:
    raise ValueError(f"engine={engine!r} is not one of {ENGINES}")
  if engine == "paged":
    max_len = max(len(p) for p in prompts) + sampling.max_new_tokens
    runner = Engine(lm.model, lm.params, sampling, max_batch=max_batch, page_size=page_size,
                    max_len=max_len)
    return runner.generate(prompts, seeds=seeds)
  ids, mask = left_pad(prompts)
  out = np.asarray(generate(lm.model, lm.params, ids, mask, dataclasses.replace(sampling, pad_id=-1),
                            seeds=seeds))
  return [[int(t) for t in row if t >= 0] for row in out]


def sampling_for(lm: LoadedModel, **fields) -> SamplingConfig:
  """A SamplingConfig that stops at the tokenizer's EOS (unless stop_tokens is given) and
  never samples ids past its vocabulary (the model's may be padded)."""
  tok = lm.tokenizer
  fields.setdefault("stop_tokens", (tok.eos_id,) if tok.eos_id is not None else ())
  fields.setdefault("vocab_limit", min(tok.vocab_size, lm.model.cfg.vocab_size))
  return SamplingConfig(**fields)


def complete(lm: LoadedModel, prompts: Sequence[str], sampling: SamplingConfig | None = None, *,
             add_bos: bool | None = None, **options) -> list[str]:
  """The generated continuation of each prompt, decoded (stop tokens removed)."""
  sampling = sampling or sampling_for(lm)
  outputs = complete_ids(lm, encode(lm, prompts, add_bos), sampling, **options)
  stop = set(sampling.stop_tokens)
  return [lm.tokenizer.decode([t for t in out if t not in stop]) for out in outputs]
