"""Sampling and cached generation."""
