"""Resumable runs: stage results saved in the partial run folder as each finishes."""

from auditor.checkpoint.codec import CheckpointError, read_value, write_value
from auditor.checkpoint.store import (
    NO_CHECKPOINT,
    Checkpoint,
    Memo,
    Terminated,
    open_checkpoint,
    run_identity,
    terminated_as_exit,
)

__all__ = [
    "NO_CHECKPOINT",
    "Checkpoint",
    "CheckpointError",
    "Memo",
    "Terminated",
    "open_checkpoint",
    "read_value",
    "run_identity",
    "terminated_as_exit",
    "write_value",
]
