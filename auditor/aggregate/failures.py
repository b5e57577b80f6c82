"""The failure-modes section: errors per class and per metadata value, confident errors
listed (missed positives first); and the confident errors in words for the summary."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.clinical.failures import ClassErrors, ConfidentError, Failures, ValueErrors

__all__ = ["LISTED_ERRORS", "FailuresView", "failures_sentence", "failures_view"]

LISTED_ERRORS = 20
"""Confident errors listed in the report (every one is in predictions.csv)."""


@dataclass(frozen=True)
class FailuresView:
    """The failure-modes section.

    Attributes:
        listed: The first :data:`LISTED_ERRORS` confident errors.
        n_confident: Confident errors in all.
    """

    cut: float
    positive_class: str | None
    by_class: tuple[ClassErrors, ...]
    listed: tuple[ConfidentError, ...]
    n_confident: int
    n_missed: int
    by_value: tuple[ValueErrors, ...]


def failures_sentence(failures: Failures) -> str:
    """How many errors were confident, and how many of them missed a positive."""
    n = len(failures.confident)
    if n == 0:
        return f"No error was made with confidence {failures.cut:.0%} or more."
    missed = (
        f", {failures.n_missed:,} of them missed {failures.positive_class} images"
        if failures.positive_class is not None
        else ""
    )
    return f"{n:,} error(s) were made with confidence {failures.cut:.0%} or more{missed}."


def failures_view(inputs: AuditInputs) -> FailuresView | None:
    """The section, or ``None`` when the model made no error."""
    failures = inputs.clinical.failures
    if not any(c.errors for c in failures.by_class):
        return None
    by_class = failures.by_class
    if len(by_class) > inputs.config.report_classes:
        by_class = tuple(sorted(by_class, key=lambda c: (-c.errors, c.label)))
        by_class = by_class[: inputs.config.report_classes]
    return FailuresView(
        cut=failures.cut,
        positive_class=failures.positive_class,
        by_class=by_class,
        listed=failures.confident[:LISTED_ERRORS],
        n_confident=len(failures.confident),
        n_missed=failures.n_missed,
        by_value=failures.by_value,
    )
