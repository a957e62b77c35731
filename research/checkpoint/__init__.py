"""Run directories and their checkpoints.

A run directory holds `config.json` (the full ExperimentConfig), `tokenizer/`, `metrics.jsonl`,
TensorBoard events, `.lock` (research.checkpoint.lock) and `checkpoints/<step>/`: orbax items
sealed by a manifest of sizes and sha256 sums (research.checkpoint.manager, .manifest).

    params = research.checkpoint.restore_params("runs/default", abstract)
    python -m research.checkpoint verify runs/default

A run's (config, model, params) come from research.pretrained.restore, which builds the model
(and joins a PEFT run's adapter to its base) around restore_params.
"""

from research.checkpoint.lock import RunDirectoryBusy, RunLock
from research.checkpoint.manager import (INVALID_DIR, Checkpointer, CheckpointWriteError,
                                         NoValidCheckpoint, saved_steps)
from research.checkpoint.reader import restore_params, verify_run
from research.checkpoint.run_config import (CONFIG_FILE, check_resumable, config_differences,
                                            read_config, resumable_differences, write_config)

__all__ = ["CONFIG_FILE", "INVALID_DIR", "CheckpointWriteError", "Checkpointer",
           "NoValidCheckpoint", "RunDirectoryBusy", "RunLock", "check_resumable",
           "config_differences", "read_config", "restore_params",
           "resumable_differences", "saved_steps", "verify_run", "write_config"]
