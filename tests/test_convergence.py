"""experiments.convergence: N and 2N steps of one config, the record and its verdict."""

import json

from experiments import convergence


def test_records_both_lengths_and_the_difference(tmp_path):
  overrides = ["mesh.data=1", "train.sample_tokens=0", "train.eval_every=2", "train.tensorboard=false"]
  assert convergence.main(["--config", "smoke", "--steps", "2", "--root", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out"), *overrides]) == 0
  record = json.loads((tmp_path / "out" / "smoke_2.json").read_text())
  short, long = record["runs"]
  assert (short["steps"], long["steps"]) == (2, 4)
  assert [s for s, _ in long["evals"]] == [2, 4]
  assert record["difference_nats"] == short["eval_loss"] - long["eval_loss"]
  assert record["converged"] == (record["difference_nats"] <= 0.05)
  assert record["provenance"]["machine"]["cpu"] and record["provenance"]["commit"]
  # Finished runs are not trained again.
  mtime = (tmp_path / "runs" / "smoke_4" / "summary.json").stat().st_mtime_ns
  convergence.main(["--config", "smoke", "--steps", "2", "--root", str(tmp_path / "runs"),
                    "--out", str(tmp_path / "out"), *overrides])
  assert (tmp_path / "runs" / "smoke_4" / "summary.json").stat().st_mtime_ns == mtime
