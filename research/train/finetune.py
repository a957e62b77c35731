"""What post-training adds to a run: the parameters it starts from, the ones it must not train,
and how the two meet in the train step.

- `train.init_from`: full fine-tuning starts from a run's or a Hugging Face directory's
  parameters (research.pretrained); the optimizer, step and data position start afresh.
- `peft.method`: the model is wrapped (research.peft), the optimizer trains only the method's
  parameters, and the base, from `train.init_from` (or a fresh init from `train.seed`), is a
  frozen input of the step.
- `distill.teacher`: the objective becomes the distillation loss (research.train.distill) and
  the teacher's parameters are another frozen input.

Frozen parameters are placed on the mesh by the run's own logical-axis rules and passed to
the jitted step as its third argument; `assemble(trained, frozen)` builds what the loss reads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import jax

from research import peft as peft_lib
from research import pretrained
from research.config.experiment import ExperimentConfig
from research.models import registry
from research.peft import core as peft_core
from research.peft import io as peft_io
from research.peft import lora
from research.train import distill

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Setup:
  model: Any  # what the objective applies: the base module, or a research.peft.PeftModel
  loss: Any  # the objective's loss function, or the distillation loss
  init_params: Any = None  # rng -> boxed trainable params for plan_training; None: the model's
  frozen: dict | None = None  # {"base": ..., "teacher": ...} arrays
  frozen_boxed: dict | None = None  # the same, abstract and boxed (for shardings)
  assemble: Any = None  # (trained, frozen) -> what the loss reads
  initial_params: Any = None  # full fine-tuning: the parameters to start from
  tuned: peft_lib.Peft | None = None
  base: dict | None = None  # where the starting / base parameters came from
  vocab_size: int = 0

  def place(self, plan):
    """(frozen arrays on the mesh, their shardings) or (None, None)."""
    if self.frozen is None:
      return None, None
    shardings = plan.param_shardings(self.frozen_boxed)
    return jax.device_put(self.frozen, shardings), shardings

  def start(self, state, plan, frozen, seed: int):
    """A fresh TrainState with the run's starting parameters in place."""
    if self.initial_params is not None:
      return state.replace(params=jax.device_put(self.initial_params, plan.state.params))
    if self.tuned is not None:
      warm = jax.jit(lambda t, f, rng: self.tuned.warm_start(t, f["base"], rng, self.vocab_size),
                     out_shardings=plan.state.params)
      return state.replace(params=warm(state.params, frozen, jax.random.key(seed)))
    return state

  def student(self, params, frozen):
    """(model, full parameters) of the trained model, for sampling and export."""
    if self.tuned is None:
      return self.model, params
    return self.tuned.model, self.tuned.combine(frozen["base"], params)

  def write_base(self, run_dir: pathlib.Path) -> None:
    if self.base is not None:
      (run_dir / peft_io.BASE_FILE).write_text(json.dumps(self.base, indent=2) + "\n")

  def save_adapter(self, run_dir: pathlib.Path, params) -> None:
    if self.tuned is not None:
      peft_io.save_adapter(run_dir / "adapter", self.tuned, params, self.base)


def _check_tokenizer(source: pretrained.Pretrained, tokenizer, what: str) -> None:
  if source.tokenizer is None:
    log.warning("%s=%s has no tokenizer to compare with the run's; make sure it is the same",
                what, source.reference["path"])
    return
  if source.tokenizer.fingerprint() != tokenizer.fingerprint():
    raise ValueError(
        f"{what}={source.reference['path']} was trained with another tokenizer "
        f"({source.tokenizer}) than this run's ({tokenizer}); the token ids would not mean the "
        "same. Use its tokenizer: data.tokenizer.kind=file data.tokenizer.path="
        f"{source.reference['path']}/tokenizer (run directories) or the same corpus and settings")


def _plain_params(source: pretrained.Pretrained, what: str):
  """The parameters of a plain model: a LoRA run is merged; other PEFT runs cannot be."""
  if isinstance(source.model, peft_core.PeftModel):
    if isinstance(source.model.method, lora.LoRA):
      return lora.merge(source.params, source.model.method.cfg)
    raise ValueError(f"{what}={source.reference['path']} is a peft.method="
                     f"{source.model.method.cfg.method!r} run; only LoRA runs merge into a plain model")
  return source.params


def setup(cfg: ExperimentConfig, model_cfg, objective, tokenizer) -> Setup:
  """Everything the loop needs beyond the model and the objective (see the module docstring)."""
  tcfg = cfg.train
  base_model = registry.build(model_cfg)
  out = Setup(model=base_model, loss=objective.loss, vocab_size=tokenizer.vocab_size)
  params = None
  if tcfg.init_from is not None:
    source = pretrained.load(tcfg.init_from, tcfg.init_step)
    pretrained.check_compatible(cfg.model, source, "train.init_from")
    _check_tokenizer(source, tokenizer, "train.init_from")
    params = pretrained.to_layout(_plain_params(source, "train.init_from"), source.model_cfg, model_cfg)
    out.base = source.reference

  assemble_student = lambda trained, frozen: trained  # noqa: E731
  frozen, frozen_boxed = {}, {}
  if cfg.peft.enabled:
    tuned = peft_lib.build(cfg.peft, base_model)
    if params is None:
      params = registry.init_params(model_cfg, jax.random.key(tcfg.seed))
      out.base = {"kind": "random", "seed": tcfg.seed}
    frozen["base"], frozen_boxed["base"] = params, tuned.base_boxed
    out.model, out.tuned, out.init_params = tuned.model, tuned, tuned.init
    assemble_student = lambda trained, frozen: tuned.combine(frozen["base"], trained)  # noqa: E731
  else:
    out.initial_params = params

  if cfg.distill.enabled:
    dcfg = cfg.distill
    teacher = pretrained.load(dcfg.teacher, dcfg.teacher_step)
    _check_tokenizer(teacher, tokenizer, "distill.teacher")
    if teacher.model_cfg.vocab_size < tokenizer.vocab_size:
      raise ValueError(f"distill.teacher's vocab_size={teacher.model_cfg.vocab_size} is smaller than "
                       f"the tokenizer's {tokenizer.vocab_size}")
    teacher_model = teacher.model
    if dcfg.chunk_tokens and cfg.peft.method == "lora" and any(
        m[-1] == "lm_head" for m in lora.adapted(out.tuned.adapter_boxed)):
      raise ValueError("distill.chunk_tokens computes the student's logits from lm_head's kernel "
                       "alone; drop lm_head from peft.targets or use distill.chunk_tokens=0")
    frozen["teacher"] = teacher.params
    frozen_boxed["teacher"] = peft_core.boxed_shapes(teacher_model, teacher.model_cfg)
    out.loss = distill.make_loss(teacher_model, dcfg, min(model_cfg.vocab_size, teacher.model_cfg.vocab_size))
    out.assemble = lambda trained, frozen: {"student": assemble_student(trained, frozen),  # noqa: E731
                                            "teacher": frozen["teacher"]}
  elif cfg.peft.enabled:
    out.assemble = assemble_student
  if frozen:
    out.frozen, out.frozen_boxed = frozen, frozen_boxed
  return out
