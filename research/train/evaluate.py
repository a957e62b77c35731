"""How well a run answers: exact-match accuracy of its responses on the validation pairs.

    python -m research.train.evaluate --workdir runs/sft [--step N] [key=value ...]
    scores = research.train.evaluate.responses(model, params, dataset)

Every validation prompt/response pair is one row (data.pack=false is forced, so no response
is cut at a row's end); a response counts as exact when each of its tokens, and the EOS
after it, is the argmax given the prompt and the reference response so far. That is exactly
the condition under which greedy decoding from the prompt produces the response and stops,
so this is greedy exact match computed in one forward pass per batch (tests/test_sft.py
checks it against research.inference.generate). Works for every run the loop writes, PEFT
runs included (research.pretrained.restore joins them to their base).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys

import jax

from research import checkpoint, data, pretrained
from research.config import overrides as overrides_lib
from research.config.data import TokenizerConfig
from research.train import losses, objectives


@functools.lru_cache(maxsize=8)
def _scorer(model):
  def score(params, batch):
    logits = model.apply({"params": params}, input_ids=batch["input_ids"],
                         segment_ids=batch["segment_ids"])
    loss, weight, correct = losses.token_cross_entropy(logits, batch["targets"], batch["loss_mask"])
    exact, count = objectives.response_exact_match(logits, batch["targets"], batch["loss_mask"])
    return {"loss": loss, "weight": weight, "correct": correct, "exact": exact, "responses": count}

  return jax.jit(score)


def responses(model, params, dataset, max_batches: int | None = None) -> dict[str, float]:
  """{"exact_match", "token_accuracy", "loss", "responses"} over `dataset`'s validation pairs
  (build it with pack=False and loss_on="answer")."""
  totals = None
  for batch in dataset.eval_batches(max_batches):
    sums = jax.device_get(_scorer(model)(params, batch))
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
  if totals is None:
    raise ValueError("the dataset has no validation batches")
  weight = max(float(totals["weight"]), 1.0)
  return {"exact_match": float(totals["exact"]) / max(float(totals["responses"]), 1.0),
          "token_accuracy": float(totals["correct"]) / weight, "loss": float(totals["loss"]) / weight,
          "responses": int(totals["responses"])}


def evaluate_run(workdir: str, step: int | None = None, overrides=()) -> dict[str, float]:
  """Scores a run on its validation pairs, or on other data (`overrides`, e.g. one task of a
  mixture: data.dataset=copy), always through the run's own tokenizer."""
  config, model, params = pretrained.restore(workdir, step=step)
  tokenizer = TokenizerConfig(kind="file", path=str(pathlib.Path(workdir) / "tokenizer"))
  config = config.replace(data=config.data.replace(tokenizer=tokenizer))
  config = overrides_lib.apply(config, ["data.pack=false", "data.loss_on=answer", *overrides])
  scores = responses(model, params, data.build(config.data))
  return {"workdir": str(workdir), "step": step if step is not None else checkpoint.saved_steps(workdir)[-1],
          **scores}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m research.train.evaluate",
                                   description="Exact-match accuracy of a run on its validation pairs.")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
  parser.add_argument("overrides", nargs="*", metavar="key=value",
                      help="config changes for evaluation, e.g. data.batch_size=64")
  args = parser.parse_args(argv)
  print(json.dumps(evaluate_run(args.workdir, args.step, args.overrides)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
