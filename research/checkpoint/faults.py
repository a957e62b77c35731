"""Failpoints: named places in the checkpoint code where a test can kill the process.

    RESEARCH_FAILPOINTS=after_rename@4 python -m research.train ...

SIGKILLs the process when the save of step 4 reaches `after_rename` (a comma-separated list
may name several; without `@STEP` every step matches). The points, in the order a save
passes them: `save_start` (nothing written yet), `before_rename` (every file written to
orbax's temporary directory, asynchronous saves only), `after_rename` (the step directory in
place, its manifest not yet written), `after_seal` (sealed, not yet pruned). This is how
etcd's gofail and TiKV's fail-rs test crash consistency: the crash happens at an exact point,
not after a guessed delay. Unset, a failpoint costs one environment lookup per save.
"""

from __future__ import annotations

import os
import signal

POINTS = ("save_start", "before_rename", "after_rename", "after_seal")
ENV = "RESEARCH_FAILPOINTS"


def hit(point: str, step: int | None) -> None:
  spec = os.environ.get(ENV)
  if not spec:
    return
  for item in spec.split(","):
    name, _, at = item.strip().partition("@")
    if name not in POINTS:
      raise ValueError(f"{ENV}: unknown failpoint {name!r}; known: {', '.join(POINTS)}")
    if name == point and (not at or int(at) == step):
      os.kill(os.getpid(), signal.SIGKILL)
