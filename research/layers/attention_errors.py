"""The error every attention backend raises for a call it cannot express."""

from __future__ import annotations


class UnsupportedAttention(ValueError):
  """A backend was asked for a mask, bias, dtype, platform or shape it cannot express.

  The message names the backend and what it cannot do; `attention_impl="auto"` (or
  `"chunked"`, which runs everything) avoids it.
  """

  def __init__(self, backend: str, reason: str):
    super().__init__(
        f"attention_impl={backend!r} cannot run this call: {reason}. "
        "Use attention_impl='chunked' (runs every mask and bias) or 'auto'.")
    self.backend = backend
    self.reason = reason
