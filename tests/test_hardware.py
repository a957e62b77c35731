"""research.hardware: the CPU flags the entry points add, and where the MFU peak comes from."""

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
