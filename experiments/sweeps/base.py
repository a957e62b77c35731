"""The base config every ready sweep varies, at three sizes, and the learning-rate grid each
variant is tuned over.

quick  a 4-layer, 64-wide char model on Tiny Shakespeare, 250 steps of 8 x 64 tokens: 10-50 s
       a run on two shared CPU cores, a sweep in minutes (notebooks, smoke checks). Far from
       converged: it shows large effects only.
cpu    the `default` config (`make train`): 4 layers, 128 wide, 0.8M parameters, 2000 steps
       of 12 x 64 tokens, AdamW 1e-3 with 100 warmup steps and cosine decay, near the end of
       its loss curve (val 1.626 at 2000 steps, 1.666 at 1500). Sized so each ready sweep,
       grid and seeds, fits in about 2 hours on 2 cores with --parallel 2 (README, "Sweeps
       and reports", for the estimate).
full   nanoGPT's Shakespeare-char baseline (6 layers, 6 heads, 384 wide, 256 context, batch 64,
       dropout 0.2, lr 1e-3 with 100 warmup steps, 5000 steps; Karpathy's
       config/train_shakespeare_char.py): minutes a run on one accelerator.

All are LLaMA-style (RMSNorm, pre-LN, SwiGLU, RoPE); each sweep changes its own axis and
tunes the learning rate per variant over `lr_grid(size)` (a 1-3-10 grid around the base
rate), then trains SEEDS seeds at each variant's best.
"""

from __future__ import annotations

from research.config.data import DataConfig, TokenizerConfig
from research.config.experiment import ExperimentConfig
from research.config.mesh import MeshConfig
from research.config.model import ModelConfig
from research.config.optim import OptimizerConfig
from research.config.train import TrainConfig
from research.sweeps import Tune, log_grid
from research.sweeps.spec import SIZES

# Seeds at each variant's chosen learning rate (the grid itself runs one).
SEEDS = 3
# The learning rates every variant is tried at: the base rate in the middle, 3x apart.
LR_GRIDS = {"quick": log_grid(1e-3, 3e-2), "cpu": log_grid(3e-4, 1e-2), "full": log_grid(3e-4, 1e-2)}


def _check(size: str) -> None:
  if size not in SIZES:
    raise ValueError(f"size={size!r} is not allowed; choose one of: {', '.join(map(repr, SIZES))}")


def tune(size: str, values: tuple[float, ...] | None = None) -> Tune:
  """Learning rate tuned per variant over `values` (default: the size's grid), SEEDS seeds at the best."""
  _check(size)
  return Tune(values=values or LR_GRIDS[size], seeds=SEEDS)


def base(size: str, **model_changes) -> ExperimentConfig:
  """The base experiment of `size`, with `model_changes` applied to its ModelConfig."""
  _check(size)
  data = DataConfig(dataset="tinyshakespeare", tokenizer=TokenizerConfig(kind="char"))
  # Runs of a sweep keep one checkpoint (the measures read it; a killed run resumes from it).
  small = dict(sample_tokens=0, progress=False, tensorboard=False, keep_checkpoints=1, keep_best=False)
  if size == "quick":
    return ExperimentConfig(
        model=ModelConfig(**{**dict(vocab_size=96, d_model=64, n_layers=4, n_heads=4,
                                    max_seq_len=64), **model_changes}),
        data=data.replace(seq_len=64, batch_size=8),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=30, weight_decay=0.1, b2=0.99),
        train=TrainConfig(steps=250, log_every=25, eval_every=50, eval_batches=16,
                          checkpoint_every=0, **small),
        # One device: the CPU sweeps are about the model, not about sharding.
        mesh=MeshConfig(data=1))
  if size == "cpu":
    return ExperimentConfig(
        model=ModelConfig(**{**dict(vocab_size=96, d_model=128, n_layers=4, n_heads=4,
                                    max_seq_len=64), **model_changes}),
        data=data.replace(seq_len=64, batch_size=12),
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=100, weight_decay=0.1, b2=0.99),
        train=TrainConfig(steps=2000, log_every=100, eval_every=500, eval_batches=50,
                          checkpoint_every=500, **small),
        mesh=MeshConfig(data=1))
  return ExperimentConfig(
      model=ModelConfig(**{**dict(vocab_size=96, d_model=384, n_layers=6, n_heads=6,
                                  max_seq_len=256, embed_dropout=0.2, attn_dropout=0.2,
                                  resid_dropout=0.2), **model_changes}),
      data=data.replace(seq_len=256, batch_size=64),
      optimizer=OptimizerConfig(lr=1e-3, warmup_steps=100, weight_decay=0.1, b2=0.99),
      train=TrainConfig(steps=5000, log_every=50, eval_every=250, eval_batches=50,
                        checkpoint_every=1000, keep_checkpoints=1, sample_tokens=0,
                        progress=False),
      mesh=MeshConfig(data=-1))
