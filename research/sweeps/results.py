"""The results table of a sweep, read from its run directories alone.

One row per point: its axis labels and overridden config values, its status, the final
train and eval loss, the loss at initialisation (ln vocab_size: where a diverged run counts),
training throughput, parameter counts, wall time, and the columns its measures returned.
`write_table` writes it as `results.csv` and `results.jsonl` beside the run directories.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from research.models import registry
from research.sweeps import tuning
from research.train.metrics_log import read_metrics

CSV_FILE = "results.csv"
JSONL_FILE = "results.jsonl"
METRIC_COLUMNS = ("steps", "train_loss", "eval_loss", "init_loss", "tokens_per_s", "params",
                  "active_params", "wall_time_s")


def _json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text()) if path.exists() else {}


def curves(run_dir: str | pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """(step, value) pairs of the train loss (`loss`) and the eval loss (`eval_loss`)."""
  run_dir = pathlib.Path(run_dir)
  out: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": []}
  if not (run_dir / "metrics.jsonl").exists():
    return out
  for record in read_metrics(run_dir):
    for key in out:
      if key in record:
        out[key].append((int(record["step"]), float(record[key])))
  return out


@functools.lru_cache(maxsize=1024)
def _model(config_json: str):
  """The model a point trains. Cached: the table is rewritten after every point, and parsing
  a config is slow (type hints looked up per field)."""
  from research.config.experiment import ExperimentConfig

  return ExperimentConfig.from_dict(json.loads(config_json)).effective_model()


def row(run_dir: str | pathlib.Path) -> dict[str, Any]:
  """The results-table row of one point's run directory."""
  run_dir = pathlib.Path(run_dir)
  point = _json(run_dir / "point.json")
  status = _json(run_dir / "status.json")
  summary = _json(run_dir / "summary.json")
  out: dict[str, Any] = {"point": point.get("point", run_dir.name),
                         "status": status.get("status", "pending")}
  out.update({f"tag.{k}": v for k, v in point.get("tags", {}).items()})
  out.update(point.get("overrides", {}))
  records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
  train = [r for r in records if "loss" in r]
  evals = [r for r in records if "eval_loss" in r]
  # The first interval's throughput includes compilation; the median of the rest is the rate.
  rates = [r["tokens_per_s"] for r in train[1:]] or [r["tokens_per_s"] for r in train]
  out["steps"] = max((r["step"] for r in records), default=0)
  out["train_loss"] = train[-1]["loss"] if train else None
  out["eval_loss"] = evals[-1]["eval_loss"] if evals else None
  out["tokens_per_s"] = statistics.median(rates) if rates else None
  if "config" in point:
    model = _model(json.dumps(point["config"], sort_keys=True))
    out["init_loss"] = tuning.init_loss(model.vocab_size)
    out["params"] = summary.get("params") or registry.num_params(model)
    out["active_params"] = model.matmul_params_per_token()
  out["wall_time_s"] = summary.get("wall_time_s")
  out.update(_json(run_dir / "measures.json"))
  if status.get("error"):
    out["error"] = status["error"].splitlines()[0]
  return out


def point_dirs(sweep_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """The run directories of a sweep, in the manifest's point order when there is one."""
  sweep_dir = pathlib.Path(sweep_dir)
  found = {p.name: p for p in sweep_dir.iterdir() if (p / "point.json").exists()}
  order = _json(sweep_dir / "sweep.json").get("points", [])
  return [found[n] for n in order if n in found] + sorted(
      p for n, p in found.items() if n not in order)


def collect(sweep_dir: str | pathlib.Path) -> list[dict[str, Any]]:
  return [row(p) for p in point_dirs(sweep_dir)]


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
  """Column order: point and status, axis labels, config values, metrics, measures, error."""
  seen: list[str] = []
  for r in rows:
    seen += [k for k in r if k not in seen]
  head = ["point", "status"]
  tags = [k for k in seen if k.startswith("tag.")]
  metrics = [k for k in METRIC_COLUMNS if k in seen]
  config = [k for k in seen if "." in k and not k.startswith("tag.") and "@" not in k]
  tail = ["error"] if "error" in seen else []
  rest = [k for k in seen if k not in {*head, *tags, *metrics, *config, *tail}]
  return head + tags + config + metrics + rest + tail


def write_table(sweep_dir: str | pathlib.Path, rows: Sequence[dict[str, Any]] | None = None,
                out_dir: str | pathlib.Path | None = None) -> list[dict[str, Any]]:
  """Writes results.csv and results.jsonl (into `out_dir`, default the sweep directory)."""
  rows = collect(sweep_dir) if rows is None else list(rows)
  out_dir = pathlib.Path(out_dir or sweep_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  write_csv(out_dir / CSV_FILE, rows, columns(rows))
  (out_dir / JSONL_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
  return rows


def write_csv(path: pathlib.Path, rows: Sequence[dict[str, Any]],
              cols: Sequence[str] | None = None) -> None:
  """`rows` as CSV, columns in first-seen order unless given; floats to 6 significant digits."""
  if cols is None:
    cols = []
    for r in rows:
      cols += [k for k in r if k not in cols]
  with pathlib.Path(path).open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(cols))
    writer.writeheader()
    for r in rows:
      writer.writerow({k: _cell(r.get(k)) for k in cols})


def _cell(value: Any) -> Any:
  if isinstance(value, float):
    return "" if math.isnan(value) else f"{value:.6g}"
  if isinstance(value, (list, tuple)):
    return json.dumps(list(value))
  return "" if value is None else value


def group_key(r: dict[str, Any], exclude: Sequence[str] = ("seed",)) -> str:
  """The configuration a row belongs to: its labels other than the seed (and `exclude`)."""
  return tuning.variant_name({k[4:]: v for k, v in r.items() if k.startswith("tag.")}, exclude)


def group(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, list[float]]:
  """Configuration -> the metric's values over its seeds (finished rows with a value only)."""
  out: dict[str, list[float]] = {}
  for r in rows:
    value = r.get(metric)
    out.setdefault(group_key(r), [])
    if r["status"] in ("done", "diverged") and isinstance(value, (int, float)) and math.isfinite(value):
      out[group_key(r)].append(float(value))
  return out
