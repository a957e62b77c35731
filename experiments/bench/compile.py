"""`compile`: seconds to compile the train step against depth, scanned and unscanned stack.

`nn.scan` traces and compiles one layer whatever the depth, so its compile time should stay
nearly flat; the Python loop compiles every layer. Nothing is run, and the persistent
compilation cache is bypassed (each program is new to this process).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from research.config.model import ModelConfig
from research.models import registry
from research.train import objectives, optimizer as opt_lib
from research.config.train import TrainConfig
from research.train.state import TrainState
from research.train.step import make_train_step
from experiments.bench.train import OPTIMIZER

SIZES = {"tiny": dict(layers=(1, 2), d_model=32), "cpu": dict(layers=(2, 8, 32), d_model=128),
         "full": dict(layers=(2, 8, 32, 64), d_model=1024)}


def compile_seconds(cfg: ModelConfig, batch: int = 4, seq_len: int = 64) -> float:
  model = registry.build(cfg)
  tx, lr = opt_lib.build(OPTIMIZER, 1000)
  step = jax.jit(make_train_step(model, objectives.causal_lm, tx, lr, TrainConfig()), donate_argnums=0)
  state = jax.eval_shape(lambda: TrainState.create(registry.param_shapes(cfg), tx, jax.random.key(0)))
  spec = lambda dtype: jax.ShapeDtypeStruct((batch, seq_len), dtype)
  batch_abs = {"input_ids": spec(np.int32), "targets": spec(np.int32), "loss_mask": spec(np.float32),
               "segment_ids": spec(np.int32)}
  start = time.perf_counter()
  step.lower(state, batch_abs).compile()
  return time.perf_counter() - start


def run(size: str, reps: int | None = None) -> list[dict]:
  setting = SIZES[size]
  d = setting["d_model"]
  rows = []
  cached = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    for layers in setting["layers"]:
      row = {"layers": layers}
      for scan in (True, False):
        cfg = ModelConfig(vocab_size=256, d_model=d, n_layers=layers, n_heads=4, n_kv_heads=2,
                          max_seq_len=256, scan_layers=scan)
        row["scanned s" if scan else "unscanned s"] = compile_seconds(cfg)
      rows.append(row)
  finally:
    jax.config.update("jax_enable_compilation_cache", cached)
  return rows
