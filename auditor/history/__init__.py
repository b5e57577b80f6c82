"""Periodic audits: the history of runs, and what makes two runs the same audit."""

from auditor.history.identity import config_sha256, dataset_sha256, model_identity
from auditor.history.settings import PeriodicSettings
from auditor.history.store import History, RunRecord, history_url, open_history

__all__ = [
    "History",
    "PeriodicSettings",
    "RunRecord",
    "config_sha256",
    "dataset_sha256",
    "history_url",
    "model_identity",
    "open_history",
]
