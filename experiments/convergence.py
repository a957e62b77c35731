"""Is a training length converged? The same config at N and 2N steps, compared.

    python -m experiments.convergence --config default --steps 2000
    python -m experiments.convergence --config default --steps 2000 model.activation=relu

The criterion the sweeps' `cpu` sizes are held to (issue 15): the reference point's final eval
loss within 0.05 nats of what the same model reaches with twice the steps (the learning-rate
schedule stretched to the longer run, as a longer run would be launched). Runs live under
`--root` and resume; the record (losses at every evaluation, the difference, wall times,
commit, command, machine) goes to experiments/results/convergence/CONFIG_STEPS.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import time

from experiments.bench._common import machine
from research.train import __main__ as train_cli
from research.train import loop
from research.train.metrics_log import read_metrics

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "convergence"
TOLERANCE = 0.05  # nats


def _train(config: str, steps: int, overrides: list[str], run_dir: pathlib.Path) -> dict:
  summary_file = run_dir / "summary.json"
  if summary_file.exists() and json.loads(summary_file.read_text()).get("step") == steps:
    return json.loads(summary_file.read_text())  # finished earlier: keep its wall time
  cfg, _ = train_cli.parse(["--config", config, "--workdir", str(run_dir), f"train.steps={steps}",
                            "train.progress=false", *overrides])
  start = time.perf_counter()
  summary = loop.train(cfg, run_dir)
  summary["command_wall_s"] = time.perf_counter() - start
  return summary


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="default")
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path("runs/convergence"))
  parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
  parser.add_argument("overrides", nargs="*", help="dotted key=value edits of the config")
  args = parser.parse_args(argv)

  record = {"config": args.config, "overrides": args.overrides, "tolerance_nats": TOLERANCE, "runs": []}
  for steps in (args.steps, 2 * args.steps):
    run_dir = args.root / f"{args.config}_{steps}"
    summary = _train(args.config, steps, args.overrides, run_dir)
    evals = [(r["step"], r["eval_loss"]) for r in read_metrics(run_dir) if "eval_loss" in r]
    record["runs"].append({"steps": steps, "eval_loss": summary["eval_loss"], "evals": evals,
                           "wall_time_s": summary.get("wall_time_s")})
  short, long = (r["eval_loss"] for r in record["runs"])
  record.update(difference_nats=short - long, converged=short - long <= TOLERANCE)
  commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
  record["provenance"] = {"command": "python -m experiments.convergence " + " ".join(sys.argv[1:] if argv is None else argv),
                          "commit": commit, "date": datetime.date.today().isoformat(), "machine": machine()}
  args.out.mkdir(parents=True, exist_ok=True)
  path = args.out / f"{args.config}_{args.steps}.json"
  path.write_text(json.dumps(record, indent=1) + "\n")
  print(f"{args.config}: eval loss {short:.4f} at {args.steps} steps, {long:.4f} at {2 * args.steps}: "
        f"{short - long:+.4f} nats ({'within' if record['converged'] else 'outside'} {TOLERANCE}) -> {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
