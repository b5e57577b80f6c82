"""A multi-label model's failure-modes section and its page-one sentence: the wrong
label calls per label and per metadata value, and the confident ones listed (misses
first).

Every figure is :class:`~auditor.multilabel.failures.LabelFailures`' (``metrics.json``'s
``label_failures``), a count over ``predictions.csv``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from auditor.aggregate.failures import LISTED_ERRORS
from auditor.aggregate.inputs import AuditInputs
from auditor.multilabel.failures import (
    ConfidentCall,
    LabelFailures,
    LabelWrongCalls,
    ValueWrongCalls,
)

__all__ = ["LabelFailuresView", "label_failures_sentence", "label_failures_view"]

NAMED = 3
"""Most labels the sentence names with their confident wrong calls (the most first)."""


@dataclass(frozen=True)
class LabelFailuresView:
    """The failure-modes section of a multi-label audit.

    Attributes:
        cut: ``high-confidence``.
        by_label: Every label's wrong calls, most wrong first; above ``report-classes``
            labels, the first of them.
        every_label: Whether ``by_label`` lists every label.
        listed: The first :data:`~auditor.aggregate.failures.LISTED_ERRORS` confident
            wrong calls.
        n_confident, n_missed: Confident wrong calls in all, and the misses among them.
        by_value: Per metadata column and value, the wrong images and calls.
        sentence: The confident wrong calls in words (page one's).
    """

    cut: float
    by_label: tuple[LabelWrongCalls, ...]
    every_label: bool
    listed: tuple[ConfidentCall, ...]
    n_confident: int
    n_missed: int
    by_value: tuple[ValueWrongCalls, ...]
    sentence: str


def label_failures_sentence(failures: LabelFailures | None) -> str:
    """How many wrong label calls were confident, the misses among them, and the label
    with the most ("" without a multi-label evaluation)."""
    if failures is None:
        return ""
    n = len(failures.confident)
    if n == 0:
        return (
            f"No label call was wrong with confidence {failures.cut:.0%} or more (a false call "
            f"with probability at least {failures.cut:g}, a miss at most {1 - failures.cut:g})."
        )
    ranked = Counter(c.label for c in failures.confident).most_common()
    labels = ", ".join(f"{label} {count:,}" for label, count in ranked[:NAMED])
    more = f" and {len(ranked) - NAMED:,} more label(s)" if len(ranked) > NAMED else ""
    return (
        f"{n:,} label call(s) were wrong with confidence {failures.cut:.0%} or more: "
        f"{failures.n_missed:,} missed a label the image has (probability at most "
        f"{1 - failures.cut:g}), {n - failures.n_missed:,} called a label it does not have "
        f"(at least {failures.cut:g}); by label: {labels}{more}."
    )


def label_failures_view(inputs: AuditInputs) -> LabelFailuresView | None:
    """The section (``None`` for a single-label model, or when no call is wrong)."""
    failures = inputs.clinical.label_failures
    if failures is None or not any(r.missed or r.false for r in failures.by_label):
        return None
    ranked = sorted(failures.by_label, key=lambda r: -(r.missed + r.false))
    limit = inputs.config.report_classes
    return LabelFailuresView(
        cut=failures.cut,
        by_label=tuple(ranked[:limit]),
        every_label=len(ranked) <= limit,
        listed=failures.confident[:LISTED_ERRORS],
        n_confident=len(failures.confident),
        n_missed=failures.n_missed,
        by_value=failures.by_value,
        sentence=label_failures_sentence(failures),
    )
