"""The base config every ready sweep varies, at two sizes.

cpu   a 4-layer, 64-wide char model on Tiny Shakespeare, 250 steps of 8 x 64 tokens: 15-40 s
      a run on two shared CPU cores, so a sweep of a dozen points takes minutes.
full  nanoGPT's Shakespeare-char baseline (6 layers, 6 heads, 384 wide, 256 context, batch 64,
      dropout 0.2, lr 1e-3 with 100 warmup steps, 5000 steps; Karpathy's
      config/train_shakespeare_char.py): minutes a run on one accelerator.

Both are LLaMA-style (RMSNorm, pre-LN, SwiGLU, RoPE); each sweep changes its own axis.
"""

from __future__ import annotations

from research.config.data import DataConfig, TokenizerConfig
from research.config.experiment import ExperimentConfig
from research.config.mesh import MeshConfig
from research.config.model import ModelConfig
from research.config.optim import OptimizerConfig
from research.config.train import TrainConfig
from research.sweeps.spec import SIZES

# Seeds per configuration: enough for a min..max spread on CPU, three on accelerators.
SEEDS = {"cpu": 2, "full": 3}


def base(size: str, **model_changes) -> ExperimentConfig:
  """The base experiment of `size`, with `model_changes` applied to its ModelConfig."""
  if size not in SIZES:
    raise ValueError(f"size={size!r} is not allowed; choose one of: {', '.join(map(repr, SIZES))}")
  data = DataConfig(dataset="tinyshakespeare", tokenizer=TokenizerConfig(kind="char"))
  if size == "cpu":
    return ExperimentConfig(
        model=ModelConfig(**{**dict(vocab_size=96, d_model=64, n_layers=4, n_heads=4,
                                    max_seq_len=64), **model_changes}),
        data=data.replace(seq_len=64, batch_size=8),
        optimizer=OptimizerConfig(lr=2e-3, warmup_steps=30, weight_decay=0.1, b2=0.99),
        train=TrainConfig(steps=250, log_every=25, eval_every=50, eval_batches=16,
                          checkpoint_every=0, keep_checkpoints=1, sample_tokens=0,
                          progress=False, tensorboard=False),
        # One device: the CPU sweeps are about the model, not about sharding.
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
