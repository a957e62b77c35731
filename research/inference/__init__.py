"""Sampling, cached generation, the paged-cache serving engine, text completion."""
