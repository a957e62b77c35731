"""A JAX/Flax research codebase for transformer language models.

Parameters are plain pytrees passed to `Module.apply`; every architectural choice is a
`ModelConfig` field. See README.md for the tour.
"""

__version__ = "0.1.0"
