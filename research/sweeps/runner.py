"""Running a sweep: one run directory per point, finished points skipped, failures kept.

    outcomes = runner.run(sweep, root="runs/sweeps", parallel=1, retry_failed=False)

Layout under `root/<sweep>/<size>/`:

  sweep.json          the sweep's manifest (points, measures, plots)
  results.csv/.jsonl  the results table, rewritten after every run (research.sweeps.results)
  <point>/            a training run directory (config.json, metrics.jsonl, checkpoints/, ...)
    point.json        the point: its tags, overrides, full config and measures
    status.json       running | done | diverged | failed | interrupted, with the error if any
    measures.json     what the sweep's measures returned
    log.txt           the run's console output

A tuned sweep (research.sweeps.tuning) runs in two phases: its learning-rate grid, then its
seeds at each variant's best value, chosen from the grid's results; the chosen points are
points of the same directory, so a re-run skips what finished and resumes the rest.

A point whose status is `done` or `diverged` (training stopped on non-finite losses, itself
a result) is finished and skipped on re-run. A `failed` point is reported and skipped unless
`retry_failed`; a `running` or `interrupted` one (the sweep was killed) runs again and its
training resumes from its last checkpoint. Points run in this process one after another
(`parallel=1`), or each in its own process, `parallel` at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import pathlib
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

from research.config.experiment import ExperimentConfig
from research.sweeps import check, measures, results, tuning
from research.sweeps.spec import Sweep

POINT_FILE = "point.json"
STATUS_FILE = "status.json"
MEASURES_FILE = "measures.json"
LOG_FILE = "log.txt"
MANIFEST_FILE = "sweep.json"
FINISHED = ("done", "diverged")


@dataclasses.dataclass(frozen=True)
class Outcome:
  point: str
  status: str  # done, diverged, failed, skipped (finished before), not-retried (failed before)
  seconds: float = 0.0
  message: str = ""


def sweep_dir(root: str | pathlib.Path, sweep: Sweep) -> pathlib.Path:
  return pathlib.Path(root) / sweep.name / sweep.size


def _write_json(path: pathlib.Path, value) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(value, indent=2) + "\n")
  tmp.replace(path)


def read_status(run_dir: pathlib.Path) -> dict | None:
  path = pathlib.Path(run_dir) / STATUS_FILE
  return json.loads(path.read_text()) if path.exists() else None


def _set_status(run_dir: pathlib.Path, status: str, **extra) -> None:
  _write_json(run_dir / STATUS_FILE, {"status": status, "time": time.time(), **extra})


def _trained(run_dir: pathlib.Path, config: ExperimentConfig) -> bool:
  """Whether training finished (a retry after a failed measure must not train again: a
  resumed run with nothing left to do would rewrite summary.json without its losses)."""
  path = run_dir / "summary.json"
  if not path.exists():
    return False
  summary = json.loads(path.read_text())
  return summary.get("step", 0) >= config.train.steps and "loss" in summary


def run_point(run_dir: str | pathlib.Path) -> str:
  """Trains the point described by `run_dir/point.json`, then takes its measures; returns
  (and records in status.json) the status. Exceptions become `failed` with the traceback."""
  from research.train import loop

  run_dir = pathlib.Path(run_dir)
  point = json.loads((run_dir / POINT_FILE).read_text())
  config = ExperimentConfig.from_dict(point["config"])
  start = time.time()
  _set_status(run_dir, "running", started=start)
  try:
    if not _trained(run_dir, config):
      loop.train(config, run_dir)
    values = {}
    for m in point["measures"]:
      values.update(measures.run(m["name"], config, run_dir, m["args"]))
    _write_json(run_dir / MEASURES_FILE, values)
  except loop.TrainingDiverged as err:
    _set_status(run_dir, "diverged", seconds=time.time() - start, error=str(err))
    return "diverged"
  except KeyboardInterrupt:
    _set_status(run_dir, "interrupted", seconds=time.time() - start)
    raise
  except Exception as err:  # a failed point is recorded; the sweep goes on
    _set_status(run_dir, "failed", seconds=time.time() - start,
                error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    return "failed"
  _set_status(run_dir, "done", seconds=time.time() - start)
  return "done"


@contextlib.contextmanager
def _logging_to(stream):
  """Points the root logger's stream handlers (absl's and orbax's warnings) at `stream`."""
  handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
  old = [h.stream for h in handlers]
  for h in handlers:
    h.setStream(stream)
  try:
    yield
  finally:
    for h, s in zip(handlers, old):
      h.setStream(s)


def _in_process(run_dir: pathlib.Path) -> str:
  with (run_dir / LOG_FILE).open("a") as log, contextlib.redirect_stdout(log), \
      contextlib.redirect_stderr(log), _logging_to(log):
    return run_point(run_dir)


def _outcome(name: str, run_dir: pathlib.Path, seconds: float) -> Outcome:
  status = read_status(run_dir) or {"status": "failed", "error": "the worker wrote no status"}
  return Outcome(name, status["status"], seconds, status.get("error", ""))


def _describe(outcome: Outcome, run_dir: pathlib.Path) -> str:
  line = f"{outcome.status:<9} {outcome.point} ({outcome.seconds:.0f}s)"
  if outcome.status in FINISHED:
    row = results.row(run_dir)
    line += "".join(f" | {k} {row[k]:.4f}" for k in ("train_loss", "eval_loss")
                    if isinstance(row.get(k), float))
  elif outcome.message:
    line += f": {outcome.message.splitlines()[0][:200]}"
  return line


def run(sweep: Sweep, root: str | pathlib.Path = "runs/sweeps", *, parallel: int = 1,
        retry_failed: bool = False, echo: Callable[[str], None] = print) -> list[Outcome]:
  """Validates every point (raising check.SweepError, with nothing run, if any is bad), then
  runs the unfinished ones and rewrites the results table. A tuned sweep runs its grid, then
  its seeds at each variant's best value."""
  if parallel < 1:
    raise ValueError(f"parallel={parallel} must be >= 1")
  configs = check.point_configs(sweep)
  directory = sweep_dir(root, sweep)
  stale = check.stale_runs(directory, configs)
  if stale:
    raise check.SweepError(sweep.id, stale)
  directory.mkdir(parents=True, exist_ok=True)
  _write_json(directory / MANIFEST_FILE, sweep.manifest())
  phase = functools.partial(_run_phase, sweep, configs, directory, parallel=parallel,
                            retry_failed=retry_failed, echo=echo)
  if sweep.tune is None:
    outcomes = phase(sweep.points, f"sweep {sweep.id}")
  else:
    grid = tuning.grid_points(sweep.points, sweep.tune)
    outcomes = phase(grid, f"sweep {sweep.id}, grid of {sweep.tune.key}")
    chosen = tuning.choices(results.collect(directory), [v.name for v in sweep.points], sweep.tune)
    for line in _describe_choices(chosen, sweep.tune):
      echo(line)
    seen = {p.name for p in grid}
    best = {v: c.best for v, c in chosen.items()}
    final = [p for p in tuning.final_points(sweep.points, sweep.tune, best) if p.name not in seen]
    outcomes += phase(final, f"sweep {sweep.id}, {sweep.tune.seeds} seeds at each variant's best "
                             f"{sweep.tune.axis}")
  results.write_table(directory)
  failed = [o for o in outcomes if o.status == "failed"]
  echo(f"sweep {sweep.id}: " + ", ".join(
      f"{n} {s}" for s, n in _counts(outcomes).items()) + f"; table {directory / results.CSV_FILE}")
  for o in failed:
    echo(f"  FAILED {o.point}: {o.message.splitlines()[0][:300] if o.message else ''} "
         f"(see {directory / o.point / STATUS_FILE})")
  return outcomes


def _describe_choices(chosen: dict[str, tuning.Choice], tune: tuning.Tune) -> list[str]:
  lines = []
  for variant, c in chosen.items():
    if not c.complete:
      missing = [f"{v:g}" for v, x in zip(c.values, c.losses) if x is None]
      lines.append(f"  {variant}: no {tune.axis} chosen, the grid has no result at "
                   f"{', '.join(missing)} (failed or not run); its seeds wait for it")
      continue
    edge = (f" (the grid's {'lowest' if c.edge == 'low' else 'highest'} value: extend the grid)"
            if c.edge else "")
    lines.append(f"  {variant}: best {tune.axis} {c.best:g}, {tune.metric} {c.best_loss:.4f}{edge}")
  return lines


def _run_phase(sweep: Sweep, configs: dict[str, ExperimentConfig], directory: pathlib.Path,
               points, title: str, *, parallel: int, retry_failed: bool,
               echo: Callable[[str], None]) -> list[Outcome]:
  """Runs the unfinished `points`; returns an Outcome for each (skipped ones included)."""
  outcomes, pending = [], []
  for point in points:
    run_dir = directory / point.name
    status = (read_status(run_dir) or {}).get("status")
    if status in FINISHED:
      outcomes.append(Outcome(point.name, "skipped", message=f"already {status}"))
    elif status == "failed" and not retry_failed:
      error = (read_status(run_dir) or {}).get("error", "")
      outcomes.append(Outcome(point.name, "not-retried", message=error))
    else:
      run_dir.mkdir(exist_ok=True)
      _write_json(run_dir / POINT_FILE, {
          "sweep": sweep.name, "size": sweep.size, "point": point.name, "tags": dict(point.tags),
          "overrides": dict(point.overrides), "config": configs[point.name].to_dict(),
          "measures": [m.to_dict() for m in sweep.measures]})
      pending.append(point.name)
  skipped = [o for o in outcomes if o.status == "skipped"]
  failed_before = [o for o in outcomes if o.status == "not-retried"]
  echo(f"{title}: {len(points)} points, {len(skipped)} finished before, "
       f"{len(failed_before)} failed before (not retried), {len(pending)} to run -> {directory}")
  for o in failed_before:
    echo(f"  failed before: {o.point}: {o.message.splitlines()[0][:200] if o.message else ''} "
         "(--retry-failed runs it again)")

  def finished(name: str, seconds: float, index: int) -> None:
    outcome = _outcome(name, directory / name, seconds)
    outcomes.append(outcome)
    results.write_table(directory)
    echo(f"[{index}/{len(pending)}] " + _describe(outcome, directory / name))

  if parallel == 1:
    for i, name in enumerate(pending, 1):
      start = time.time()
      _in_process(directory / name)
      finished(name, time.time() - start, i)
  else:
    _run_parallel(directory, pending, parallel, finished)
  return outcomes


def _counts(outcomes: list[Outcome]) -> dict[str, int]:
  counts: dict[str, int] = {}
  for o in outcomes:
    counts[o.status] = counts.get(o.status, 0) + 1
  return counts


def _run_parallel(directory: pathlib.Path, pending: list[str], parallel: int, finished) -> None:
  """Each point in its own worker process (research.sweeps.worker), `parallel` at once."""
  queue, running, index = list(pending), {}, 0
  try:
    while queue or running:
      while queue and len(running) < parallel:
        name = queue.pop(0)
        log = (directory / name / LOG_FILE).open("a")
        proc = subprocess.Popen([sys.executable, "-m", "research.sweeps.worker", str(directory / name)],
                                stdout=log, stderr=subprocess.STDOUT)
        running[name] = (proc, log, time.time())
      time.sleep(0.2)
      for name, (proc, log, start) in list(running.items()):
        if proc.poll() is not None:
          log.close()
          del running[name]
          index += 1
          finished(name, time.time() - start, index)
  finally:
    for proc, log, _ in running.values():
      # SIGINT: the training loop saves a checkpoint before it exits, so the point resumes.
      proc.send_signal(signal.SIGINT)
    for proc, log, _ in running.values():
      try:
        proc.wait(timeout=120)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      log.close()
    for name in running:
      if (read_status(directory / name) or {}).get("status") == "running":
        _set_status(directory / name, "interrupted")
