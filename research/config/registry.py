"""Named experiment configs for `python -m research.train --config NAME`.

    registry.get("default")          # make train: small LLaMA-style char model, Tiny Shakespeare
    registry.get("smoke")            # seconds on a CPU, synthetic data, no download
    registry.get("llama2-7b")        # any model preset, with default data and training
    registry.get("llama2-7b-smoke")  # its tiny variant on synthetic data
    registry.get("path/to/cfg.json") # a saved config.json, or a .py file defining get_config()
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
from collections.abc import Callable

from research import presets
from research.config.data import DataConfig, SyntheticConfig, TokenizerConfig
from research.config.experiment import ExperimentConfig
from research.config.model import ModelConfig
from research.config.optim import OptimizerConfig
from research.config.masking import MaskingConfig
from research.config.train import DEFAULT_OBJECTIVE, ENCODER_OBJECTIVE_HEADS, PAIR_OBJECTIVES, TrainConfig
from research.config.validate import close_matches

EXPERIMENTS: dict[str, Callable[[], ExperimentConfig]] = {}


def register(name: str):
  def wrap(fn):
    EXPERIMENTS[name] = fn
    return fn

  return wrap


@register("default")
def default() -> ExperimentConfig:
  """Small LLaMA-style char model on Tiny Shakespeare (`make train`, a few minutes on 2 CPU cores)."""
  return ExperimentConfig(
      name="default",
      model=ModelConfig(vocab_size=96, d_model=128, n_layers=4, n_heads=4, max_seq_len=256,
                        norm="rmsnorm", activation="swiglu", position="rope"),
      data=DataConfig(dataset="tinyshakespeare", tokenizer=TokenizerConfig(kind="char"),
                      seq_len=64, batch_size=12),
      optimizer=OptimizerConfig(lr=1e-3, warmup_steps=100, weight_decay=0.1, b2=0.99),
      train=TrainConfig(steps=2000, log_every=100, eval_every=500, eval_batches=50,
                        checkpoint_every=500),
  )


def _synthetic_data(seq_len: int = 64, batch_size: int = 8) -> DataConfig:
  return DataConfig(dataset="synthetic_mix", tokenizer=TokenizerConfig(kind="char"),
                    seq_len=seq_len, batch_size=batch_size,
                    synthetic=SyntheticConfig(num_examples=2000))


@register("smoke")
def smoke() -> ExperimentConfig:
  """A 2-layer model on the built-in synthetic tasks: trains in seconds, downloads nothing."""
  return ExperimentConfig(
      name="smoke",
      model=ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, max_seq_len=128),
      data=_synthetic_data(),
      optimizer=OptimizerConfig(lr=3e-3, warmup_steps=10),
      train=TrainConfig(steps=20, log_every=10, eval_every=10, eval_batches=2, checkpoint_every=10,
                        sample_tokens=16),
  )


def from_preset(name: str) -> ExperimentConfig:
  """A model preset with default training and its family's objective (span corruption for
  encoder-decoders, blank infilling for prefix LMs, the preset's pretraining objective for
  encoders); smoke variants train on synthetic data."""
  model = presets.get(name)
  if model.family == "encoder":
    return _encoder_experiment(name, model)
  objective = DEFAULT_OBJECTIVE[model.family]
  if name.endswith("-smoke"):
    base = smoke()
    return base.replace(name=name, model=model,
                        train=dataclasses.replace(base.train, objective=objective))
  return ExperimentConfig(
      name=name, model=model,
      data=DataConfig(dataset="tinyshakespeare", tokenizer=TokenizerConfig(kind="char"),
                      seq_len=min(1024, model.max_seq_len), batch_size=8),
      train=TrainConfig(objective=objective))


# ---- Encoder-only presets: pretrained with their objective (presets.PRETRAINING_OBJECTIVES) ----
_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The vocabulary each preset's tokenizer kind learns from the corpus (BERT's WordPiece, uncased;
# RoBERTa's byte-level BPE; ALBERT's SentencePiece with BERT's special tokens).
_ENCODER_TOKENIZERS = {
    "bert-base": TokenizerConfig(kind="wordpiece", vocab_size=8192, lowercase=True),
    "roberta-base": TokenizerConfig(kind="bytelevel_bpe", vocab_size=8192),
    "albert-base": TokenizerConfig(kind="sentencepiece_unigram", vocab_size=8000,
                                   special_tokens=("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")),
}


def _encoder_experiment(name: str, model: ModelConfig) -> ExperimentConfig:
  """The preset's pretraining objective and heads; sentence pairs from Tiny Shakespeare's
  lines (NSP/SOP) or its packed text (MLM alone). Smoke variants: the synthetic tasks with a
  character vocabulary that has BERT's special tokens."""
  smoke_variant = name.endswith("-smoke")
  base = name.removesuffix("-smoke")
  objective = presets.PRETRAINING_OBJECTIVES[base]
  model = model.replace(encoder_heads=ENCODER_OBJECTIVE_HEADS[objective])
  pairs = PAIR_OBJECTIVES.get(objective, "none")
  # RoBERTa masks afresh every epoch (Liu et al. 2019, section 4.1); BERT and ALBERT once.
  masking = MaskingConfig(mode="dynamic" if objective == "mlm" else "static")
  layout = dict(pack=pairs == "none", pairs=pairs)
  if smoke_variant:
    data = DataConfig(dataset="synthetic_mix", seq_len=64, batch_size=8,
                      tokenizer=TokenizerConfig(kind="char", special_tokens=_BERT_SPECIALS),
                      synthetic=SyntheticConfig(num_examples=2000), **layout)
    base_run = smoke()
    return base_run.replace(name=name, model=model, data=data,
                            train=dataclasses.replace(base_run.train, objective=objective,
                                                      mlm=masking))
  data = DataConfig(dataset="tinyshakespeare", tokenizer=_ENCODER_TOKENIZERS[base], seq_len=128,
                    batch_size=32, split_lines=pairs != "none", **layout)
  return ExperimentConfig(name=name, model=model, data=data,
                          # Devlin et al. (2019), appendix A.2, with a short warmup.
                          optimizer=OptimizerConfig(lr=1e-4, b2=0.999, weight_decay=0.01,
                                                    schedule="linear", warmup_steps=100),
                          train=TrainConfig(objective=objective, mlm=masking))


def names() -> list[str]:
  return sorted(EXPERIMENTS) + presets.names()


def describe() -> list[str]:
  lines = [f"{n}: {(EXPERIMENTS[n].__doc__ or '').strip().splitlines()[0]}" for n in sorted(EXPERIMENTS)]
  lines.append("any model preset (" + ", ".join(presets.names(include_smoke=False))
               + "), each also as NAME-smoke")
  return lines


def get(name_or_file: str) -> ExperimentConfig:
  if name_or_file in EXPERIMENTS:
    return EXPERIMENTS[name_or_file]()
  path = pathlib.Path(name_or_file)
  if path.suffix == ".json" and path.exists():
    return ExperimentConfig.from_dict(json.loads(path.read_text()))
  if path.suffix == ".py" and path.exists():
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise ValueError(f"{path} defines no get_config() returning an ExperimentConfig")
    return module.get_config()
  try:
    return from_preset(name_or_file)
  except ValueError:
    raise ValueError(f"unknown config {name_or_file!r}{close_matches(name_or_file, names())}; "
                     f"known: {', '.join(sorted(EXPERIMENTS))}, any model preset (and NAME-smoke), "
                     "or a .json/.py file") from None
