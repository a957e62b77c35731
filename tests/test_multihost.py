"""Two JAX processes on loopback (gloo collectives, four CPU devices each) train like one
process with eight devices. Marked `multiprocess` so it can be deselected; CI runs it."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.multiprocess

ARGS = ["--config", "smoke", "train.steps=6", "train.log_every=1", "train.eval_every=3",
        "train.checkpoint_every=3", "train.progress=false", "train.sample_tokens=4"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  return env


def _losses(run_dir):
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in records if "loss" in r], [r["eval_loss"] for r in records if "eval_loss" in r]


def test_two_processes_train_like_one(tmp_path):
  port = _free_port()
  procs = [
      subprocess.Popen(
          [sys.executable, "-m", "research.train", *ARGS, "--workdir", str(tmp_path / "two"),
           "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
          env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)
  ]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "8 device(s) in 2 process(es)" in outputs[0]
  subprocess.run([sys.executable, "-m", "research.train", *ARGS, "--workdir", str(tmp_path / "one")],
                 env=_env(8), check=True, capture_output=True)

  two, one = _losses(tmp_path / "two"), _losses(tmp_path / "one")
  assert len(two[0]) == 6 and len(two[1]) == 2
  np.testing.assert_allclose(two[0], one[0], rtol=1e-5)
  np.testing.assert_allclose(two[1], one[1], rtol=1e-5)
  # Checkpoints were written collectively, and the sample is the same text.
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]
  assert (tmp_path / "two" / "samples.txt").read_text() == (tmp_path / "one" / "samples.txt").read_text()
