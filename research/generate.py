"""python -m research.generate (--run RUN_DIR | --hf DIR) --prompt TEXT [--prompt ...] [options]

Thin entry point: parse, load (research.inference.completion), complete, print. Prompts come
from --prompt (repeatable) and/or --prompts-file (one per line). Each completion is printed
after its prompt, or as one JSON object per line with --json.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys


def parse(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m research.generate", description=__doc__.split("\n\n")[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--run", help="a run directory written by python -m research.train")
  source.add_argument("--hf", help="a Hugging Face save_pretrained directory (safetensors + tokenizer)")
  parser.add_argument("--step", type=int, help="checkpoint step of --run (default: the newest)")
  parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
  parser.add_argument("--prompts-file", help="a UTF-8 file with one prompt per line")
  sampling = parser.add_argument_group("sampling (research.inference.sampling.SamplingConfig)")
  sampling.add_argument("--max-new-tokens", type=int, default=64)
  sampling.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  sampling.add_argument("--top-k", type=int, default=0, help="0: off")
  sampling.add_argument("--top-p", type=float, default=1.0, help="1: off")
  sampling.add_argument("--repetition-penalty", type=float, default=1.0, help="1: off")
  sampling.add_argument("--seed", type=int, default=0,
                        help="prompt i samples with fold_in(key(seed), i)")
  sampling.add_argument("--stop-id", type=int, action="append",
                        help="stop token id (repeatable; default: the tokenizer's EOS)")
  run = parser.add_argument_group("execution")
  run.add_argument("--engine", choices=("paged", "contiguous"), default="paged",
                   help="paged: continuous batching over a paged KV cache; contiguous: one batch")
  run.add_argument("--max-batch", type=int, default=8, help="paged engine: running requests")
  run.add_argument("--page-size", type=int, default=16, help="paged engine: slots per page")
  run.add_argument("--attention-impl", help="override the model's attention_impl (e.g. chunked)")
  run.add_argument("--bos", choices=("auto", "yes", "no"), default="auto",
                   help="prepend BOS to prompts (auto: as the run was trained; never for --hf)")
  parser.add_argument("--json", action="store_true", help="one JSON object per prompt")
  args = parser.parse_args(argv)
  if args.step is not None and not args.run:
    parser.error("--step applies to --run only")
  prompts = list(args.prompt)
  if args.prompts_file:
    text = pathlib.Path(args.prompts_file).read_text(encoding="utf-8")
    prompts += [line for line in text.splitlines() if line.strip()]
  if not prompts:
    parser.error("give at least one --prompt or a --prompts-file")
  args.prompts = prompts
  return args


def main(argv=None) -> int:
  args = parse(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  from research.inference import completion

  overrides = {"attention_impl": args.attention_impl} if args.attention_impl else {}
  lm = completion.load_run(args.run, args.step, **overrides) if args.run else completion.load_hf(
      args.hf, **overrides)
  fields = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
  if args.stop_id:
    fields["stop_tokens"] = tuple(args.stop_id)
  sampling = completion.sampling_for(lm, **fields)
  add_bos = None if args.bos == "auto" else args.bos == "yes"
  texts = completion.complete(lm, args.prompts, sampling, add_bos=add_bos, engine=args.engine,
                              max_batch=args.max_batch, page_size=args.page_size)
  for prompt, text in zip(args.prompts, texts):
    if args.json:
      print(json.dumps({"prompt": prompt, "completion": text}, ensure_ascii=False))
    else:
      print(f"{prompt}{text}\n{'-' * 40}")
  sys.stdout.flush()
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
