"""research.hardware: the CPU flags `import research` adds, and where the MFU peak comes from."""

import os
import subprocess
import sys

from research import hardware


def test_configure_cpu_adds_its_flags_and_keeps_the_users():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  hardware.configure_cpu(env)
  assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4", *hardware.CPU_XLA_FLAGS]
  hardware.configure_cpu(env)  # idempotent
  assert env["XLA_FLAGS"].split().count(hardware.CPU_XLA_FLAGS[0]) == 1
  mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"}
  hardware.configure_cpu(mine)
  assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
  empty = {}
  hardware.configure_cpu(empty)
  assert empty["XLA_FLAGS"] == " ".join(hardware.CPU_XLA_FLAGS)


def test_peak_flops_override_and_source(monkeypatch):
  monkeypatch.setenv("RESEARCH_PEAK_FLOPS", "1e11")
  assert hardware.peak_flops("float32") == (1e11, "RESEARCH_PEAK_FLOPS")


def _run(code: str, xla_flags: str | None) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        check=True)


def test_importing_research_before_jax_starts_sets_the_cpu_flags():
  show = "import os, research, jax; jax.numpy.ones(1).block_until_ready(); print(os.environ['XLA_FLAGS'])"
  assert _run(show, None).stdout.split() == list(hardware.CPU_XLA_FLAGS)
  mine = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
  assert _run(show, mine).stdout.split() == [mine]  # the user's own choice stays
  late = ("import logging, jax; logging.basicConfig(level=logging.INFO); "
          "jax.numpy.ones(1).block_until_ready(); import research")
  assert "started before `import research`" in _run(late, None).stderr
