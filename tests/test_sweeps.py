"""Sweeps: expansion of axes, validation of every point before any run, running with
skip/resume/retry, and the report regenerated from the run directories alone."""

import csv
import json
import math
import pathlib
import shutil

import pytest

from research.config import overrides
from research.config import registry
from research.sweeps import Measure, Sweep, SweepError, Tune, check, hyper, measures, report, results, runner

# A one-layer model on the synthetic tasks (no download), two steps per point.
BASE = overrides.apply(registry.get("smoke"), [
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=32",
    "data.seq_len=32", "data.batch_size=4", "data.synthetic.num_examples=400",
    "train.steps=2", "train.log_every=1", "train.eval_every=2", "train.eval_batches=1",
    "train.checkpoint_every=0", "train.sample_tokens=0", "train.progress=false",
    "train.tensorboard=false", "train.async_checkpoint=false", "mesh.data=1"])


def _sweep(points, name="t", **kwargs):
  return Sweep(name=name, size="cpu", base=BASE, points=points, **kwargs)


def test_product_zip_named_and_seeds_expand_to_named_points():
  points = hyper.product([
      hyper.sweep("model.norm_placement", ["post", "pre"]),
      hyper.named("heads", {"mha": {"model.n_kv_heads": None}, "mqa": {"model.n_kv_heads": 1}}),
      hyper.fixed({"optimizer.lr": 1e-3}),
      hyper.seeds(2),
  ])
  assert len(points) == 8
  assert points[0].name == "norm_placement=post,heads=mha,seed=0"
  assert points[-1].name == "norm_placement=pre,heads=mqa,seed=1"
  assert dict(points[3].overrides) == {"model.norm_placement": "post", "model.n_kv_heads": 1,
                                       "optimizer.lr": 1e-3, "train.seed": 1, "data.seed": 1}
  zipped = hyper.zipit([hyper.sweep("optimizer.lr", [1e-3, 3e-3]),
                        hyper.sweep("optimizer.warmup_steps", [10, 30], name="warmup")])
  assert [p.name for p in zipped] == ["lr=0.001,warmup=10", "lr=0.003,warmup=30"]
  assert len(hyper.chain(zipped, hyper.fixed({}))) == 3


@pytest.mark.parametrize("build,needle", [
    (lambda: hyper.product([hyper.sweep("optimizer.lr", [1]), hyper.fixed({"optimizer.lr": 2})]),
     "same key 'optimizer.lr'"),
    (lambda: hyper.zipit([hyper.sweep("a.b", [1, 2]), hyper.sweep("a.c", [1])]), "one length"),
    (lambda: hyper.sweep("data.path", ["a/b"]), "must be non-empty and contain none of"),
    (lambda: hyper.sweep("model.d_model", [32, 32]), "repeated values"),
])
def test_combinator_mistakes_are_errors(build, needle):
  with pytest.raises(ValueError, match=needle):
    build()


def test_every_bad_point_is_reported_before_anything_runs(tmp_path):
  sweep = _sweep(hyper.chain(
      hyper.fixed({"model.d_model": 32}),                                  # fine
      hyper.named("typo", {"x": {"model.n_layer": 2}}),                    # unknown key
      hyper.named("value", {"x": {"model.activation": "tanh"}}),           # not allowed
      hyper.named("type", {"x": {"model.d_model": "wide"}}),               # wrong type
      hyper.named("divides", {"x": {"model.n_kv_heads": 3, "model.n_heads": 4}}),
      hyper.named("layout", {"x": {"model.parallel_block": True, "model.norm_placement": "sandwich"}}),
      hyper.named("data", {"x": {"data.dataset": "tinyshakespear"}}),
      hyper.named("mesh", {"x": {"mesh.data": 64}}),
  ), measures=(Measure("eval_at_lengths", {"multipliers": (1, 0)}),))
  with pytest.raises(SweepError) as err:
    runner.run(sweep, tmp_path)
  problems = {}
  for p in err.value.problems:
    problems[p.point] = problems.get(p.point, "") + p.message + "\n"
  assert "unknown config key 'model.n_layer'" in problems["typo=x"]
  assert "model.n_layers" in problems["typo=x"]  # the close match
  assert "ModelConfig.activation='tanh' is not allowed" in problems["value=x"]
  assert "'wide' is not a valid int" in problems["type=x"]
  assert "n_heads=4 must be divisible by ModelConfig.n_kv_heads=3" in problems["divides=x"]
  assert "parallel_block=True" in problems["layout=x"]
  assert "data.dataset='tinyshakespear'" in problems["data=x"]
  assert "needs 64 devices" in problems["mesh=x"]
  # The measure's bad argument is reported for every point that got that far.
  assert "multipliers=(1, 0)" in problems["base"]
  assert not (tmp_path / "t").exists(), "nothing may be written before every point is valid"


def test_keys_changed_together_are_validated_together():
  # Applied one at a time, n_kv_heads=8 would meet n_heads=4 and fail.
  config = check.apply(BASE, {"model.n_kv_heads": 8, "model.n_heads": 8, "model.d_model": 64})
  assert (config.model.n_heads, config.model.n_kv_heads) == (8, 8)


def test_a_backend_that_cannot_take_a_bias_is_caught_for_alibi_and_t5(tmp_path, monkeypatch):
  # Valid configs that fail only when the model runs: caught by tracing the training forward.
  from research.config import model as model_config
  from research.layers import attention_backends

  def no_bias(q, k, v, mask, bias, **kwargs):
    if bias is not None and bias.active:
      raise NotImplementedError("this backend takes no attention bias")
    return attention_backends.xla_attention(q, k, v, mask, bias, **kwargs)

  monkeypatch.setattr(model_config, "ATTENTION_IMPLS", (*model_config.ATTENTION_IMPLS, "nobias"))
  monkeypatch.setitem(attention_backends.REGISTRY, "nobias",
                      attention_backends.Entry(no_bias, lambda *a, **k: None))
  sweep = _sweep(hyper.product([hyper.sweep("model.position", ["rope", "alibi", "t5"]),
                                hyper.fixed({"model.attention_impl": "nobias"})]))
  with pytest.raises(SweepError) as err:
    runner.run(sweep, tmp_path)
  assert [p.point for p in err.value.problems] == ["position=alibi", "position=t5"]
  assert "takes no attention bias" in err.value.problems[0].message
  assert "does not build or run at batch [4, 32]" in err.value.problems[0].message


def _run_dirs(tmp_path, sweep):
  return {p.name: runner.sweep_dir(tmp_path, sweep) / p.name for p in sweep.points}


def test_finished_points_are_skipped_failed_ones_retried_on_request(tmp_path):
  # vocab_size=8 passes validation (the tokenizer is built at run time) but cannot train.
  sweep = _sweep(hyper.named("model", {"ok1": {"model.d_model": 32}, "ok2": {"model.d_model": 16},
                                       "bad": {"model.vocab_size": 8}}))
  lines = []
  outcomes = runner.run(sweep, tmp_path, echo=lines.append)
  assert {o.point: o.status for o in outcomes} == {"model=ok1": "done", "model=ok2": "done",
                                                   "model=bad": "failed"}
  assert any("FAILED model=bad" in line and "vocab_size" in line for line in lines)
  dirs = _run_dirs(tmp_path, sweep)
  table = list(csv.DictReader((runner.sweep_dir(tmp_path, sweep) / results.CSV_FILE).open()))
  assert [r["status"] for r in table] == ["done", "done", "failed"]
  assert float(table[0]["eval_loss"]) > 0 and table[0]["tag.model"] == "ok1"
  assert "model.vocab_size=8 is smaller than the tokenizer's vocabulary" in table[2]["error"]
  stamps = {n: json.loads((d / runner.STATUS_FILE).read_text())["time"] for n, d in dirs.items()}

  again = runner.run(sweep, tmp_path, echo=lambda _: None)
  assert {o.point: o.status for o in again} == {"model=ok1": "skipped", "model=ok2": "skipped",
                                                "model=bad": "not-retried"}
  assert stamps == {n: json.loads((d / runner.STATUS_FILE).read_text())["time"] for n, d in dirs.items()}

  retried = runner.run(sweep, tmp_path, retry_failed=True, echo=lambda _: None)
  assert {o.point: o.status for o in retried}["model=bad"] == "failed"
  assert json.loads((dirs["model=bad"] / runner.STATUS_FILE).read_text())["time"] > stamps["model=bad"]

  # A point interrupted after training resumes: it takes its measures and keeps its losses.
  runner._set_status(dirs["model=ok1"], "interrupted")
  before = (dirs["model=ok1"] / "metrics.jsonl").read_text()
  resumed = runner.run(sweep, tmp_path, echo=lambda _: None)
  assert {o.point: o.status for o in resumed}["model=ok1"] == "done"
  assert (dirs["model=ok1"] / "metrics.jsonl").read_text() == before
  assert "loss" in json.loads((dirs["model=ok1"] / "summary.json").read_text())


def test_a_run_directory_of_another_config_is_refused(tmp_path):
  sweep = _sweep(hyper.sweep("model.d_model", [32]))
  runner.run(sweep, tmp_path, echo=lambda _: None)
  edited = _sweep(hyper.product([hyper.sweep("model.d_model", [32]),
                                 hyper.fixed({"optimizer.lr": 0.5})]))
  with pytest.raises(SweepError, match=r"holds a run of another config \(optimizer.lr"):
    runner.run(edited, tmp_path, echo=lambda _: None)


def test_parallel_points_run_in_worker_processes(tmp_path):
  sweep = _sweep(hyper.sweep("model.d_model", [16, 32]))
  outcomes = runner.run(sweep, tmp_path, parallel=2, echo=lambda _: None)
  assert sorted(o.status for o in outcomes) == ["done", "done"]
  for run_dir in _run_dirs(tmp_path, sweep).values():
    assert "params" in (run_dir / runner.LOG_FILE).read_text()  # the worker's console output


def test_report_is_regenerated_from_the_run_directories(tmp_path):
  sweep = _sweep(hyper.product([hyper.sweep("model.position", ["learned", "rope"]), hyper.seeds(2)]),
                 measures=(Measure("eval_at_lengths", {"multipliers": (1, 2), "tokens": 128,
                                                       "batch_tokens": 128}),),
                 plots=("curves", "final", "lengths"))
  runner.run(sweep, tmp_path, echo=lambda _: None)
  directory = runner.sweep_dir(tmp_path, sweep)
  # Copy only the run directories (and the manifest): the report needs nothing else.
  copy = tmp_path / "copy"
  shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("results.*"))
  from experiments import report as report_cli

  assert report_cli.main([str(copy), "--out", str(tmp_path / "out")]) == 0
  rows = [json.loads(line) for line in (tmp_path / "out" / results.JSONL_FILE).read_text().splitlines()]
  assert [r["point"] for r in rows] == [p.name for p in sweep.points]
  learned, rope = rows[0], rows[2]
  assert learned["eval_loss@32"] > 0 and learned["eval_loss@64"] is None
  assert "learned positions have no entry past 32" in learned["eval_lengths_note"]
  assert rope["eval_loss@64"] > 0 and rope["eval_lengths_note"] is None
  # At 1x the measure repeats the loop's own final evaluation on the same tokens.
  assert rope["eval_loss@32"] == pytest.approx(rope["eval_loss"], rel=1e-5)
  for stem in ("loss_curves", "final_loss", "loss_vs_length"):
    for suffix in (".png", ".svg"):
      assert (tmp_path / "out" / f"{stem}{suffix}").stat().st_size > 1000, stem
  assert report.markdown_table(rows, ["point", "eval_loss@64"]).count("n/a") == 2
  summary = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
  assert [(r["variant"], r["n"], r["verdict"]) for r in summary] == [
      ("position=learned", "2", "reference"), ("position=rope", "2", summary[1]["verdict"])]


def test_kv_cache_bytes_scale_with_kv_heads():
  mha = BASE.model.replace(n_heads=4, n_kv_heads=4, d_model=32)
  mqa = mha.replace(n_kv_heads=1)
  assert measures.kv_cache_bytes_per_token(mha) == 2 * 1 * 4 * 8 * 4  # K and V, L, K heads, H, fp32
  assert measures.kv_cache_bytes_per_token(mha) == 4 * measures.kv_cache_bytes_per_token(mqa)


def test_a_tuned_sweep_runs_its_grid_then_seeds_at_each_best_and_resumes(tmp_path, monkeypatch):
  """With a stand-in for training whose loss is known for every point: the grid, each variant's
  best learning rate (an edge one flagged), its seeds there, a kill and a resume, the report."""
  from research.train import loop

  calls, kill = [], {"activation=gelu,lr=0.003,seed=1"}

  def train(config, run_dir):
    run_dir = pathlib.Path(run_dir)
    calls.append(run_dir.name)
    if run_dir.name in kill:
      kill.clear()
      raise KeyboardInterrupt
    lr, act, seed = config.optimizer.lr, config.model.activation, config.train.seed
    if act == "relu" and lr >= 1e-2:
      raise loop.TrainingDiverged("non-finite loss")
    # gelu is best at 3e-3 (inside the grid), relu at 1e-3 (its lowest value), gelu lower.
    best, floor = {"gelu": (3e-3, 2.0), "relu": (1e-3, 2.3)}[act]
    loss = floor + 0.2 * abs(math.log10(lr / best)) + 0.001 * seed
    steps = config.train.steps
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"step": steps, "loss": loss + 0.1, "tokens_per_s": 1000.0}) + "\n"
        + json.dumps({"step": steps, "eval_loss": loss}) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"step": steps, "loss": loss + 0.1, "params": 1}))

  monkeypatch.setattr(loop, "train", train)
  tune = Tune(values=(1e-3, 3e-3, 1e-2, 3e-2), seeds=3)
  sweep = _sweep(hyper.sweep("model.activation", ["gelu", "relu"]), tune=tune,
                 reference="activation=relu", plots=("curves", "final", "tuning"))
  lines = []
  with pytest.raises(KeyboardInterrupt):
    runner.run(sweep, tmp_path, echo=lines.append)
  grid = [f"activation={a},lr={lr},seed=0"
          for a in ("gelu", "relu") for lr in ("0.001", "0.003", "0.01", "0.03")]
  assert calls == grid + ["activation=gelu,lr=0.003,seed=1"]
  assert any("activation=gelu: best lr 0.003" in line for line in lines)
  assert any("activation=relu: best lr 0.001" in line and "lowest value: extend the grid" in line
             for line in lines)

  calls.clear()
  outcomes = runner.run(sweep, tmp_path, echo=lambda _: None)
  # The grid is finished; the killed seed runs again, then the rest; seed 0 was the grid's.
  assert calls == [f"activation=gelu,lr=0.003,seed={s}" for s in (1, 2)] + [
      f"activation=relu,lr=0.001,seed={s}" for s in (1, 2)]
  statuses = {o.point: o.status for o in outcomes}
  assert statuses["activation=relu,lr=0.01,seed=0"] == "skipped"
  directory = runner.sweep_dir(tmp_path, sweep)
  assert runner.read_status(directory / "activation=relu,lr=0.03,seed=0")["status"] == "diverged"

  paths = report.write(directory)
  assert {p.name for p in paths} >= {"summary.csv", "summary.md", "tuning.csv", "loss_vs_lr.png",
                                     "final_loss.png"}
  summary = {r["variant"]: r for r in map(json.loads, (directory / "summary.jsonl").read_text().splitlines())}
  gelu, relu = summary["activation=gelu"], summary["activation=relu"]
  assert (gelu["lr"], gelu["lr_edge"], gelu["n"], gelu["verdict"]) == (3e-3, "", 3, "better")
  assert gelu["mean"] == pytest.approx(2.001) and gelu["diff"] == pytest.approx(-0.3)
  assert (relu["lr"], relu["lr_edge"], relu["lr_diverged"], relu["verdict"]) == (1e-3, "low", 2, "reference")
  l0 = math.log(BASE.model.vocab_size)
  assert relu["lr_sensitivity"] == pytest.approx((2.3 + 2.3 + 0.2 * math.log10(3) + 2 * l0) / 4 - 2.3)
  curve = [r for r in csv.DictReader((directory / "tuning.csv").open()) if r["variant"] == "activation=relu"]
  assert [float(r["eval_loss"]) for r in curve][2:] == [pytest.approx(l0, abs=1e-5)] * 2
