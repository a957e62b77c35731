"""Benchmarks, sweeps and reports built on the `research` library (thin entry points)."""
