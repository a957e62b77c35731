"""A JAX/Flax research codebase for transformer language models.

Parameters are plain pytrees passed to `Module.apply`; every architectural choice is a
`ModelConfig` field. See README.md for the tour.
"""

__version__ = "0.1.0"

# XLA:CPU flags measured faster for these models, set before JAX starts its CPU backend.
from research import hardware as _hardware  # noqa: E402

_hardware.configure_on_import()
