"""Frozen, validated configuration dataclasses, one per concern."""

from research.config.model import ModelConfig

__all__ = ["ModelConfig"]
