"""The history's schema: its two tables and the steps that build them, in order.

A database records the steps applied in ``auditor_schema`` (version, what it added,
when); :class:`~auditor.history.store.History` applies the missing ones when it opens a
database, each in one transaction with its version row. A new step is appended to
:data:`MIGRATIONS`; a step is never edited once released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["METRICS", "MIGRATIONS", "RUNS", "SCHEMA"]


def _run_columns(version: int) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(255), nullable=False, index=True),
        sa.Column("model_version", sa.String(255), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("data_sha256", sa.String(64), nullable=False),
        sa.Column("config_sha256", sa.String(64), nullable=False),
        sa.Column("started", sa.String(40), nullable=False),
        sa.Column("finished", sa.String(40), nullable=False),
        sa.Column("n_images", sa.Integer, nullable=False),
        sa.Column("policy_passed", sa.Boolean, nullable=False),
        sa.Column("policy_failed", sa.Integer, nullable=False),
        sa.Column("policy_declared", sa.Integer, nullable=False),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("auditor_version", sa.String(40), nullable=False),
        sa.Column("recorded", sa.String(40), nullable=False),
    ]
    if version >= 2:
        columns.append(sa.Column("host", sa.String(255)))
    return columns


def _metric_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float),
        sa.Column("ci_low", sa.Float),
        sa.Column("ci_high", sa.Float),
    ]


def _tables(version: int) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    runs = sa.Table("runs", metadata, *_run_columns(version))
    metrics = sa.Table("run_metrics", metadata, *_metric_columns())
    return metadata, runs, metrics


SCHEMA = sa.Table(
    "auditor_schema",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied", sa.String(40), nullable=False),
)
_METADATA, RUNS, METRICS = _tables(version=2)
"""The current tables."""


def _first(connection: Connection) -> None:
    _tables(version=1)[0].create_all(connection)


def _host(connection: Connection) -> None:
    connection.execute(sa.text("ALTER TABLE runs ADD COLUMN host VARCHAR(255)"))
    sa.Index("runs_identity", RUNS.c.model_sha256, RUNS.c.data_sha256, RUNS.c.config_sha256).create(
        connection
    )


MIGRATIONS: tuple[tuple[int, str, Callable[[Connection], None]], ...] = (
    (1, "runs and their headline metrics", _first),
    (2, "the host each run ran on; an index on the model, data and config hashes", _host),
)
"""Every schema step in order: version, what it adds, the DDL."""
