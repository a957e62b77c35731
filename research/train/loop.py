"""The training loop: build everything from an ExperimentConfig, resume if the run directory
holds checkpoints, train, evaluate, sample, log and checkpoint.

    summary = research.train.loop.train(config, "runs/my-run")

Re-running the same command resumes from the newest valid checkpoint; the data
iterator's position and the RNG are part of the checkpoint, so the resumed run sees exactly
the batches and dropout masks the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import pathlib
import shutil
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from research import checkpoint, data, distributed, hardware
from research.config.experiment import ExperimentConfig
from research.inference.generate import generate
from research.inference.sampling import SamplingConfig
from research.models import registry
from research.peft.core import PeftModel
from research.sharding.mesh import make_mesh
from research.sharding.plan import plan_training
from research.train import finetune, objectives, optimizer as optimizer_lib
from research.train.metrics_log import MetricsWriter, Progress, format_line
from research.train.state import TrainState
from research.train.step import make_eval_step, make_train_step

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


def _save_tokenizer(tokenizer, run_dir: pathlib.Path) -> None:
  target = run_dir / "tokenizer"
  if target.exists():
    return
  tmp = run_dir / "tokenizer.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  tokenizer.save(tmp)
  tmp.rename(target)


def _to_device(batch, sharding):
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def _prepared(objective, batch, tokenizer, cfg, epoch: int):
  if objective.prepare is None:
    return batch
  return objective.prepare(batch, tokenizer=tokenizer, config=cfg, epoch=epoch)


def sample_text(model, params, tokenizer, prompt: str, tokens: int, temperature: float, seed: int) -> str:
  # Decoding never pipelines; the parameters have the same layout either way.
  cfg = model.cfg.replace(pipeline_stages=1, pipeline_microbatches=1)
  decoder = registry.build(cfg)
  model = model.replace_base(decoder) if isinstance(model, PeftModel) else decoder
  ids = tokenizer.encode(prompt) or [tokenizer.bos_id or 0]
  if cfg.position == "learned":
    tokens = min(tokens, cfg.max_seq_len - len(ids))
  stop = (tokenizer.eos_id,) if tokenizer.eos_id is not None else ()
  out = generate(model, params, np.asarray([ids], np.int32), sampling=SamplingConfig(
      max_new_tokens=max(tokens, 1), temperature=temperature, top_k=0, stop_tokens=stop,
      pad_id=-1, seed=seed, vocab_limit=tokenizer.vocab_size))
  out = multihost_utils.process_allgather(out, tiled=True) if jax.process_count() > 1 else out
  new = [int(t) for t in np.asarray(out)[0] if t >= 0 and t != tokenizer.eos_id]
  return prompt + tokenizer.decode(new)


def train(cfg: ExperimentConfig, workdir: str | pathlib.Path) -> dict:
  """Trains `cfg` in `workdir`, resuming from its newest valid checkpoint; returns the summary.

  The run directory is locked for the run's length (research.checkpoint.lock): a second run on
  it is refused while this one lives.
  """
  run_dir = pathlib.Path(workdir)
  run_dir.mkdir(parents=True, exist_ok=True)
  with checkpoint.RunLock(run_dir) if distributed.is_primary() else contextlib.nullcontext():
    return _train(cfg, run_dir)


def _train(cfg: ExperimentConfig, run_dir: pathlib.Path) -> dict:
  tcfg = cfg.train
  primary = distributed.is_primary()
  say = print if primary else (lambda *a, **k: None)
  ckpt = checkpoint.Checkpointer(run_dir, every=tcfg.checkpoint_every, keep=tcfg.keep_checkpoints,
                                 keep_best=tcfg.keep_best, async_save=tcfg.async_checkpoint)
  changed = checkpoint.check_resumable(run_dir, cfg, saved=ckpt.run_config(run_dir / checkpoint.CONFIG_FILE))
  dataset = data.build(cfg.data)
  tokenizer = dataset.tokenizer
  if primary:
    checkpoint.write_config(run_dir, cfg)
    _save_tokenizer(tokenizer, run_dir)
  model_cfg = cfg.effective_model()
  if model_cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
                     f"vocabulary ({tokenizer.vocab_size}); set model.vocab_size>={tokenizer.vocab_size}")
  model = registry.build(model_cfg)
  mesh = make_mesh(cfg.mesh)
  optimizer, lr_schedule = optimizer_lib.build(cfg.optimizer, tcfg.steps)
  objective = objectives.get(tcfg.objective)
  loss_scale = tcfg.loss_scale_init if tcfg.precision == "fp16" else 1.0
  finalize = objective.finalize or (lambda metrics: metrics)

  # Post-training: a starting point, frozen parameters (PEFT base, teacher), a wrapped model.
  ft = finetune.setup(cfg, model_cfg, objective, tokenizer)
  model = ft.model
  if primary:
    ft.write_base(run_dir)
  plan = plan_training(model_cfg, optimizer, cfg.mesh, mesh, init_params=ft.init_params)
  frozen, frozen_sh = ft.place(plan)
  frozen_args, frozen_in = ((), ()) if frozen is None else ((frozen,), (frozen_sh,))
  restored = ckpt.restore_latest(plan.abstract)
  if restored is None:
    state = jax.jit(plan.init_fn, static_argnums=1, out_shardings=plan.state)(
        jax.random.key(tcfg.seed), loss_scale)
    state = ft.start(state, plan, frozen, tcfg.seed)
    data_state, start = None, 0
  else:
    state, meta = restored
    data_state, start = meta["data"], int(state.step)
    say(f"resuming from the checkpoint of step {start}"
        + ("; changed since it was saved (saved -> now): " + ", ".join(changed) if changed else ""),
        flush=True)

  batch_sh = plan.batch
  step_fn = make_train_step(
      model, ft.loss, optimizer, lr_schedule, tcfg, grad_shardings=plan.grads,
      opt_device_shardings=plan.opt_device,
      opt_host_shardings=plan.state.opt_state if plan.opt_device is not None else None,
      assemble=ft.assemble)
  # Metrics come back replicated, so every process can read them.
  replicated = NamedSharding(mesh, PartitionSpec())
  train_step = jax.jit(step_fn, in_shardings=(plan.state, batch_sh, *frozen_in),
                       out_shardings=(plan.state, replicated), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model, ft.loss, ft.assemble),
                      in_shardings=(plan.state.params, batch_sh, *frozen_in), out_shardings=replicated)

  writer = MetricsWriter(run_dir, tensorboard=tcfg.tensorboard, enabled=primary)
  writer.truncate_after(start)
  peak, peak_source = hardware.peak_flops(model_cfg.dtype)
  flops_per_token = (objective.flops_per_token(model_cfg, cfg.data.seq_len)
                     if objective.flops_per_token else model_cfg.flops_per_token(cfg.data.seq_len))
  tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
  mesh_desc = " x ".join(f"{a}={n}" for a, n in mesh.shape.items() if n > 1) or "one device"
  say(f"{cfg.name}: {registry.num_params(model_cfg):,} params | {mesh.devices.size} device(s) in "
      f"{jax.process_count()} process(es), mesh {mesh_desc} | {dataset.train_tokens:,} train tokens "
      f"| peak {peak / 1e9:,.0f} GFLOP/s per device ({peak_source})", flush=True)
  if ft.tuned is not None:
    say(f"peft.method={cfg.peft.method}: training {ft.tuned.num_trainable():,} parameters; the "
        f"base ({ft.base['path'] if 'path' in ft.base else 'random init'}) is frozen", flush=True)
  if cfg.distill.enabled:
    say(f"distilling from {cfg.distill.teacher} (T={cfg.distill.temperature}, "
        f"alpha={cfg.distill.alpha})", flush=True)

  def evaluate() -> dict[str, float]:
    """eval_loss and the objective's other metrics over the validation batches."""
    totals = None
    batches = dataset.eval_batches(tcfg.eval_batches, process_index=jax.process_index(),
                                   process_count=jax.process_count())
    for batch in batches:
      batch = _prepared(objective, batch, tokenizer, cfg, epoch=0)
      with plan.scope():
        sums = eval_step(state.params, _to_device(batch, batch_sh), *frozen_args)
      totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = jax.device_get(totals)
    weight = max(float(totals.pop("weight")), 1.0)
    values = finalize({k: float(v) / weight for k, v in totals.items()})
    return {f"eval_{k}": v for k, v in values.items()}

  # A PEFT method that cannot decode with a KV cache (prompt tuning) skips the samples.
  samples = bool(objective.samples_text and tcfg.sample_tokens
                 and (ft.tuned is None or ft.tuned.method.supports_cache))
  iterator = dataset.train_iterator(state=data_state, process_index=jax.process_index(),
                                    process_count=jax.process_count())
  saved_config = cfg.to_dict()
  progress = Progress(tcfg.steps, start, tcfg.progress and primary)
  check_every = min(tcfg.log_every, tcfg.max_nonfinite)
  pending, interval_start, wall_start = [], time.perf_counter(), time.perf_counter()
  summary = {"step": start}
  eval_loss = None
  try:
    for step in range(start + 1, tcfg.steps + 1):
      epoch = iterator.epoch
      batch = _prepared(objective, next(iterator), tokenizer, cfg, epoch)
      with plan.scope():
        state, metrics = train_step(state, _to_device(batch, batch_sh), *frozen_args)
      pending.append(metrics)
      last = step == tcfg.steps
      if step % check_every == 0 or last:
        run = int(state.nonfinite_run)
        if run >= tcfg.max_nonfinite:
          raise TrainingDiverged(
              f"{run} consecutive steps up to step {step} had a non-finite loss or gradient; each "
              f"was skipped, so the parameters are those of step {step - run}. Checkpoints up to "
              f"then are intact in {run_dir / 'checkpoints'}. Lower optimizer.lr, raise "
              "optimizer.warmup_steps or use train.precision=bf16/fp32.")
      if step % tcfg.log_every == 0 or last:
        elapsed = time.perf_counter() - interval_start
        values = {k: float(np.mean(v, axis=0)) if np.ndim(v[0]) == 0 else np.mean(v, axis=0)
                  for k, v in jax.tree.map(lambda *x: list(x), *jax.device_get(pending)).items()}
        values = finalize(values)
        tokens_per_s = tokens_per_step * len(pending) / elapsed
        values.update(ppl=math.exp(min(values["loss"], 50.0)), tokens_per_s=tokens_per_s,
                      skipped_total=int(state.skipped),
                      mfu=tokens_per_s * flops_per_token / (peak * mesh.devices.size))
        values = writer.write(step, values)
        summary.update(step=step, loss=values["loss"], tokens_per_s=tokens_per_s, mfu=values["mfu"])
        progress.clear()
        say(format_line(step, tcfg.steps, values), flush=True)
        pending = []
      eval_now = (tcfg.eval_every and step % tcfg.eval_every == 0) or last
      if eval_now:
        evals = evaluate()
        eval_loss = evals["eval_loss"]
        writer.write(step, evals)
        summary.update(evals)
        progress.clear()
        say(format_line(step, tcfg.steps, evals), flush=True)
      if (samples and tcfg.sample_every and step % tcfg.sample_every == 0 and not last):
        text = sample_text(*ft.student(state.params, frozen), tokenizer, tcfg.sample_prompt,
                           tcfg.sample_tokens, tcfg.sample_temperature, seed=step)
        writer.write_text(step, "sample", text)
      if ckpt.should_save(step) or last:
        ckpt.save(step, state, {"data": iterator.state(), "eval_loss": eval_loss if eval_now else None},
                  eval_loss=eval_loss if eval_now else None, config=saved_config)
      if eval_now or step % tcfg.log_every == 0:
        interval_start = time.perf_counter()
      progress.update(step)
  except KeyboardInterrupt:
    step = int(state.step)
    say(f"\ninterrupted: saving a checkpoint at step {step} before exiting", flush=True)
    ckpt.save(step, state, {"data": iterator.state(), "eval_loss": None}, config=saved_config)
    ckpt.wait()
    raise
  finally:
    progress.clear()
    ckpt.wait()
    writer.close()

  if primary:
    ft.save_adapter(run_dir, state.params)
  if samples:
    text = sample_text(*ft.student(state.params, frozen), tokenizer, tcfg.sample_prompt,
                       tcfg.sample_tokens, tcfg.sample_temperature, seed=tcfg.steps)
    say("--- sample ---\n" + text + "\n--------------", flush=True)
    if primary:
      (run_dir / "samples.txt").write_text(text + "\n")
  summary["wall_time_s"] = time.perf_counter() - wall_start
  summary["params"] = registry.num_params(model_cfg)
  if primary:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  ckpt.close()
  return summary
