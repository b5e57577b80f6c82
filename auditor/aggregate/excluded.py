"""The excluded-files section: every file that is in no metric, and why."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs

__all__ = ["ExcludedView", "excluded_view"]


@dataclass(frozen=True)
class ExcludedView:
    """``(relative path, reason)`` per excluded file, as in ``excluded.csv``."""

    files: tuple[tuple[str, str], ...]


def excluded_view(inputs: AuditInputs) -> ExcludedView:
    """The excluded files, as in ``excluded.csv``."""
    excluded = inputs.evaluation.excluded
    return ExcludedView(
        tuple(
            (str(path), str(reason))
            for path, reason in zip(excluded["path"], excluded["reason"], strict=True)
        )
    )
