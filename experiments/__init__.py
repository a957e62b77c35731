"""Experiments and benchmarks built on the `research` library (entry points stay thin)."""
