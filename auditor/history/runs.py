"""The history as ``auditor run`` uses it: the previous audit of the same model, an
unchanged earlier run (``--skip-if-unchanged``), and recording a finished run."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from auditor import __version__
from auditor.config import AuditConfig
from auditor.data import discover
from auditor.errors import OutputError
from auditor.history.identity import config_sha256, dataset_sha256, model_identity
from auditor.history.page import write_history_page
from auditor.history.store import History, RunRecord, open_history
from auditor.load import file_sha256

__all__ = ["page_path", "previous_run", "record_run", "unchanged_run"]

log = logging.getLogger(__name__)


def _existing(config: AuditConfig) -> History | None:
    """The configured history when it already exists (reading never creates one)."""
    return open_history(config.periodic.history, config.out, create=False)


def model_name(config: AuditConfig) -> str:
    """The model's name in the history."""
    return model_identity(config.as_dict(), str(config.model))[0]


def previous_run(config: AuditConfig, started: str) -> tuple[RunRecord | None, str]:
    """The latest earlier run of this model's name whose run folder is here, or ``None``
    with why (``""``: there is none; see :meth:`History.previous`)."""
    history = _existing(config)
    return history.previous(model_name(config), started) if history is not None else (None, "")


def unchanged_run(config: AuditConfig) -> RunRecord | None:
    """An earlier run with this model file, data and configuration (by their hashes) whose
    folder is still there, or ``None``. Hashes the model and every data file; runs no
    model."""
    history = _existing(config)
    if history is None:
        return None
    model = file_sha256(config.model) if config.model.is_file() else ""
    data = dataset_sha256(discover(config.data, config.classes, config.labels.output))
    return history.unchanged(model, data, config_sha256(config.as_dict(), __version__))


def page_path(history: History) -> Path | None:
    """Where ``history.html`` goes: beside a SQLite database (``None`` for a server
    database: ``auditor history --html PATH`` writes it anywhere)."""
    url = sa.make_url(history.url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database).with_name("history.html")


def record_run(config: AuditConfig, folder: Path) -> RunRecord | None:
    """Record the complete run folder in the configured history (``None``: none kept) and
    rewrite ``history.html`` beside a SQLite history.

    Raises:
        OutputError: The history cannot be written (the run folder is complete and kept;
            the message says how to record it later).
    """
    try:
        history = open_history(config.periodic.history, config.out, create=True)
        if history is None:
            return None
        recorded = history.record(folder)
    except (DBAPIError, OutputError) as error:
        reason = error.orig if isinstance(error, DBAPIError) else error
        raise OutputError(
            f"the run folder {str(folder)!r} is complete, but it was not recorded in the "
            f"history ({reason}); record it with `auditor history --add {folder}`"
        ) from None
    page = page_path(history)
    if page is not None:
        try:
            write_history_page(history, page)
        except (DBAPIError, OutputError) as error:  # the run is recorded: say so, go on
            log.warning("run %d is recorded, but %s", recorded.id, error)
    return recorded
