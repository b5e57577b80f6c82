"""The history of runs: one row per successful audit, in SQLite or any SQLAlchemy database.

Every run that renames its run folder into place is recorded (:meth:`History.record`):
the model's name, version and SHA-256, the data's SHA-256, the configuration's hash,
start and end, the headline metrics with their confidence intervals, the policy's
result, the run folder and the SHA-256 of its ``manifest.json``. A run folder deleted
later is reported as missing (:attr:`RunRecord.missing`), never an error.

Migrations (:mod:`auditor.history.schema`) are a small versioned table
(``auditor_schema``), not Alembic: the schema is two tables that grow by additive steps,
every step is a few lines of portable DDL, and Alembic would ship a migration
environment, a script folder and its own CLI to users who only ever run ``auditor``.
Each step runs in one transaction with its version row; when two processes open an old
database at once, one applies a step and the other finds its row (on SQLite the
transaction takes the write lock when it begins; on a server the second one's DDL fails
and the row it then finds says the step is done).

Concurrent writers lose nothing: on SQLite every writing transaction begins with ``BEGIN
IMMEDIATE`` and waits up to :data:`BUSY_SECONDS` for another writer, instead of pysqlite's
deferred transactions, which fail with "database is locked" when two upgrade to writers
at once (reads begin deferred); a server database serialises its own inserts. A run
recorded twice (``auditor history --add`` after a run that was recorded) keeps one row.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from auditor.errors import ConfigError, OutputError
from auditor.history.identity import config_sha256, model_identity
from auditor.history.schema import METRICS, MIGRATIONS, RUNS, SCHEMA
from auditor.load import file_sha256

__all__ = [
    "BUSY_SECONDS",
    "HEADLINE",
    "History",
    "RunRecord",
    "history_url",
    "open_history",
]

BUSY_SECONDS = 120
"""How long a SQLite writer waits for another to finish before giving up."""

HEADLINE: dict[str, str] = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "auc": "operating_point.auc",
    "sensitivity": "operating_point.sensitivity",
    "specificity": "operating_point.specificity",
    "macro_auc": "macro_auc",
    "ece": "ece",
    "subset_accuracy": "multi_label.subset_accuracy",
    "hamming_loss": "multi_label.hamming_loss",
    "label_macro_auc": "multi_label.macro_auc",
    "micro_auc": "multi_label.micro_auc",
}
"""The metrics recorded for each run: name → where ``metrics.json`` holds it (a number, or
an object with ``value``, ``ci_low`` and ``ci_high``)."""


@dataclass(frozen=True)
class RunRecord:
    """One recorded run (``metrics``: name → ``(value, ci_low, ci_high)``)."""

    id: int
    model_name: str
    model_version: str
    model_sha256: str
    data_sha256: str
    config_sha256: str
    started: str
    finished: str
    n_images: int
    policy_passed: bool
    policy_failed: int
    policy_declared: int
    folder: str
    manifest_sha256: str
    auditor_version: str
    recorded: str
    host: str | None
    metrics: dict[str, tuple[float | None, float | None, float | None]] = field(
        default_factory=dict
    )

    @property
    def missing(self) -> bool:
        """Whether the run folder is gone (deleted or moved since the run)."""
        return not Path(self.folder).is_dir()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, with ``missing`` and each metric as an object."""
        fields = {k: v for k, v in self.__dict__.items() if k != "metrics"}
        metrics = {
            name: dict(zip(("value", "ci_low", "ci_high"), triple, strict=True))
            for name, triple in self.metrics.items()
        }
        return {**fields, "missing": self.missing, "metrics": metrics}


def _headline(metrics: dict[str, Any]) -> dict[str, tuple[float | None, ...]]:
    found: dict[str, tuple[float | None, ...]] = {}
    for name, path in HEADLINE.items():
        node: Any = metrics
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            found[name] = (node.get("value"), node.get("ci_low"), node.get("ci_high"))
        elif isinstance(node, int | float):
            found[name] = (float(node), None, None)
    return found


def history_url(location: str | None, out: Path) -> str | None:
    """The SQLAlchemy URL of the history: ``location`` when it is a URL, a SQLite file at
    ``location`` when it is a path, ``<out>/history.sqlite`` when unset, ``None`` for
    ``"-"`` (no history)."""
    if location == "-":
        return None
    if location is not None and "://" in location:
        return location
    path = Path(location) if location is not None else out / "history.sqlite"
    return f"sqlite:///{path.absolute()}"


def _sqlite_engine(url: sa.URL) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_SECONDS})

    @sa.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions begin below, not in pysqlite

    @sa.event.listens_for(engine, "begin")
    def _take_write_lock(connection: Connection) -> None:
        writes = connection.get_execution_options().get("writes", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


def _parse(url: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"--history {url!r} is neither a file path nor a SQLAlchemy URL "
            f"(such as postgresql://host/audits)"
        ) from None


def _engine(url: str) -> Engine:
    parsed = _parse(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            return _sqlite_engine(parsed)
        return sa.create_engine(parsed, pool_pre_ping=True)
    except NoSuchModuleError:
        raise ConfigError(
            f"--history {url!r} names a database whose SQLAlchemy dialect is not installed; "
            f"install its driver (for PostgreSQL: pip install psycopg)"
        ) from None
    except (ModuleNotFoundError, OSError) as error:
        raise ConfigError(f"--history {url!r} cannot be opened ({error})") from None


class History:
    """The history database at ``url`` (migrated to the current schema when opened)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        try:
            self._migrate()
        except DBAPIError as error:
            raise OutputError(
                f"the history {self.where!r} cannot be opened ({error.orig}); check the path "
                f"or URL given to --history, or pass --history - to keep no history"
            ) from None

    @property
    def where(self) -> str:
        """The URL without its password."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that will write: on SQLite it takes the write lock when it
        begins (``BEGIN IMMEDIATE``), so two writers queue instead of deadlocking; reads
        begin deferred and never wait for one another."""
        with self.engine.connect() as connection:
            connection.execution_options(writes=True)
            with connection.begin():
                yield connection

    @property
    def version(self) -> int:
        """The schema version the database is at."""
        with self.engine.connect() as connection:
            return int(connection.scalar(sa.select(sa.func.max(SCHEMA.c.version))) or 0)

    def _migrate(self, upto: int | None = None) -> None:
        """Apply every step the database lacks, each in one transaction with its row."""
        for version, description, step in MIGRATIONS:
            if upto is not None and version > upto:
                return
            try:
                with self._writing() as connection:
                    SCHEMA.create(connection, checkfirst=True)
                    done = connection.scalar(
                        sa.select(SCHEMA.c.version).where(SCHEMA.c.version == version)
                    )
                    if done is not None:
                        continue
                    step(connection)
                    connection.execute(
                        SCHEMA.insert().values(
                            version=version, description=description, applied=_now()
                        )
                    )
            except DBAPIError:
                # Another process applied this step first: its version row is there (on a
                # server, the second ALTER TABLE fails before the row's key would).
                if self._applied(version):
                    continue
                raise

    def _applied(self, version: int) -> bool:
        with self.engine.connect() as connection:
            found = connection.scalar(
                sa.select(SCHEMA.c.version).where(SCHEMA.c.version == version)
            )
        return found is not None

    def record(self, folder: Path) -> RunRecord:
        """Record the complete run folder ``folder`` (everything is read from its
        ``manifest.json``, ``metrics.json`` and ``policy.json``); a run recorded already
        (the same ``manifest.json``) is returned as it is."""
        manifest = _read_json(folder / "manifest.json")
        metrics = _read_json(folder / "metrics.json")
        policy = _read_json(folder / "policy.json")
        name, version = model_identity(manifest["config"], manifest["model"]["path"])
        row = {
            "model_name": name,
            "model_version": version,
            "model_sha256": manifest["model"]["sha256"],
            "data_sha256": manifest["data"]["sha256"],
            "config_sha256": config_sha256(manifest["config"], manifest["auditor_version"]),
            "started": manifest["started"],
            "finished": manifest["finished"],
            "n_images": metrics["n_images"],
            "policy_passed": policy["passed"],
            "policy_failed": policy["failed"],
            "policy_declared": policy["declared"],
            "folder": str(folder.absolute()),
            "manifest_sha256": file_sha256(folder / "manifest.json"),
            "auditor_version": manifest["auditor_version"],
            "recorded": _now(),
            "host": socket.gethostname(),
        }
        headline = _headline(metrics)
        with self._writing() as connection:
            known = connection.scalar(
                sa.select(RUNS.c.id).where(RUNS.c.manifest_sha256 == row["manifest_sha256"])
            )
            if known is not None:  # recorded already (`--add` twice): one row per run
                run_id = int(known)
                headline = {}
            else:
                inserted = connection.execute(RUNS.insert().values(**row)).inserted_primary_key
                run_id = int(inserted[0]) if inserted is not None else 0
            if headline:
                connection.execute(
                    METRICS.insert(),
                    [
                        {"run_id": run_id, "name": n, "value": v, "ci_low": lo, "ci_high": hi}
                        for n, (v, lo, hi) in headline.items()
                    ],
                )
        return self.get(int(run_id))

    def runs(self, model_name: str | None = None) -> list[RunRecord]:
        """Every recorded run (of ``model_name`` when given), oldest first."""
        query = sa.select(RUNS).order_by(RUNS.c.started, RUNS.c.id)
        if model_name is not None:
            query = query.where(RUNS.c.model_name == model_name)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            ids = [row["id"] for row in rows]
            metrics: dict[int, dict[str, tuple[float | None, ...]]] = {i: {} for i in ids}
            if ids:
                for m in connection.execute(
                    sa.select(METRICS).where(METRICS.c.run_id.in_(ids))
                ).mappings():
                    metrics[m["run_id"]][m["name"]] = (m["value"], m["ci_low"], m["ci_high"])
        return [RunRecord(**dict(row), metrics=metrics[row["id"]]) for row in rows]  # type: ignore[arg-type]

    def get(self, run_id: int) -> RunRecord:
        """The run recorded as ``run_id``.

        Raises:
            ConfigError: No run has that id.
        """
        found = [r for r in self.runs() if r.id == run_id]
        if not found:
            raise ConfigError(
                f"the history {self.where!r} has no run {run_id}; `auditor history` lists them"
            )
        return found[0]

    def previous(self, model_name: str, before: str) -> tuple[RunRecord | None, str]:
        """The latest run of ``model_name`` started before ``before`` whose folder is still
        here, or ``None`` with why: ``""`` when there is no earlier run, else a sentence
        (every earlier run's folder is gone: deleted, moved, or on another machine)."""
        earlier = [r for r in self.runs(model_name) if r.started < before]
        here = [r for r in earlier if not r.missing]
        if here:
            return here[-1], ""
        if not earlier:
            return None, ""
        last = earlier[-1]
        return None, (
            f"The folders of the {len(earlier)} earlier run(s) of {model_name!r} in the "
            f"history are not on this machine (the latest, run {last.id}: {last.folder}); "
            f"they were deleted or moved, or ran elsewhere"
        )

    def unchanged(self, model: str, data: str, config: str) -> RunRecord | None:
        """The latest run with these model, data and config hashes whose folder is still
        there (``None``: none)."""
        same = [
            r
            for r in self.runs()
            if (r.model_sha256, r.data_sha256, r.config_sha256) == (model, data, config)
            and not r.missing
        ]
        return same[-1] if same else None


def open_history(location: str | None, out: Path, create: bool = True) -> History | None:
    """The history for the ``history`` setting and ``--out``: ``None`` when none is kept
    (``"-"``), or when ``create`` is false and its SQLite file does not exist yet (so
    reading never leaves an empty database behind)."""
    url = history_url(location, out)
    if url is None:
        return None
    parsed = _parse(url)
    sqlite = parsed.get_backend_name() == "sqlite" and parsed.database
    if not create and sqlite and not Path(str(parsed.database)).is_file():
        return None
    return History(url)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{str(path)!r} cannot be read ({error}); pass a complete run folder"
        ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat()
