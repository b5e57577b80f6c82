"""A multi-label model's subgroups, label by label: fairlearn's disparities across each
metadata column's groups with the group lowest in sensitivity and in specificity (the
section), and every group's rates (the appendix).

Every figure is :func:`auditor.multilabel.fairness.label_fairness`' (``metrics.json``'s
``label_fairness``; the rates are ``subgroups.csv``'s rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.subgroups import disparity_rows
from auditor.clinical.fairness import DISPARITIES, Fairness, GroupMetrics
from auditor.metrics import Estimate

__all__ = [
    "LabelDisparityRow",
    "LabelGroupRow",
    "LabelSubgroupsView",
    "label_subgroups_view",
    "lowest_group",
]

EQUALIZED_ODDS = DISPARITIES.index("equalized odds difference")


@dataclass(frozen=True)
class LabelDisparityRow:
    """One label's disparities across one column's groups (in :data:`DISPARITIES`
    order), and its judged groups lowest in sensitivity and in specificity, in words
    (:func:`lowest_group`)."""

    label: str
    column: str
    values: tuple[Estimate, ...]
    lowest_sensitivity: str
    lowest_specificity: str


@dataclass(frozen=True)
class LabelGroupRow:
    """One label's rates among the images of one value of one column."""

    label: str
    group: GroupMetrics


@dataclass(frozen=True)
class LabelSubgroupsView:
    """The subgroups of a multi-label audit.

    Attributes:
        disparities: The labels' disparity rows, the largest equalized-odds difference
            first; above ``report-classes`` rows, the first of them.
        every_row: Whether ``disparities`` lists every label and column compared.
        groups: Every label's rates per value (the appendix), in output order; above
            ``report-classes`` labels, the first labels'.
        every_label: Whether ``groups`` has every label's.
        unjudged: The labels no column could compare (fewer than two groups large
            enough to judge), in output order.
    """

    disparity_names: tuple[str, ...]
    disparities: tuple[LabelDisparityRow, ...]
    every_row: bool
    groups: tuple[LabelGroupRow, ...]
    every_label: bool
    unjudged: tuple[str, ...]
    min_group_size: int
    resamples: int
    resampled: str
    rate_interval: str
    binned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def lowest_group(fairness: Fairness, column: str, measure: str) -> str:
    """The judged group of ``column`` lowest in ``measure``, with its rate (``value:
    rate``); "equal" when no other judged group's rate is above it; "only <value>
    measured" when one judged group has the rate; "—" when none has."""
    judged = [g for g in fairness.groups if g.column == column and not g.too_few]
    rates = {g.value: getattr(g, measure).value for g in judged}
    rates = {value: rate for value, rate in rates.items() if np.isfinite(rate)}
    lowest = fairness.lowest.get((column, measure))
    if lowest not in rates:
        return "—"
    if len(rates) == 1:
        return f"only {lowest} measured"
    if max(rates.values()) == rates[lowest]:
        return f"equal ({rates[lowest]:.1%})"
    return f"{lowest}: {rates[lowest]:.1%}"


def _rows(fairness: Fairness) -> list[LabelDisparityRow]:
    return [
        LabelDisparityRow(
            label=fairness.positive_class,
            column=row.column,
            values=row.values,
            lowest_sensitivity=lowest_group(fairness, row.column, "sensitivity"),
            lowest_specificity=lowest_group(fairness, row.column, "specificity"),
        )
        for row in disparity_rows(fairness)
    ]


def _largest_first(row: LabelDisparityRow) -> float:
    value = row.values[EQUALIZED_ODDS].value
    return -value if np.isfinite(value) else np.inf


def label_subgroups_view(inputs: AuditInputs) -> LabelSubgroupsView | None:
    """The section (``None`` for a single-label model, or without a metadata column)."""
    fairnesses = inputs.clinical.label_fairness
    if not any(f.groups for f in fairnesses):
        return None  # every column skipped: the dependence section says why
    rows = sorted((r for f in fairnesses for r in _rows(f)), key=_largest_first)
    limit = inputs.config.report_classes
    first, resampling = fairnesses[0], inputs.clinical.resampling
    return LabelSubgroupsView(
        disparity_names=DISPARITIES,
        disparities=tuple(rows[:limit]),
        every_row=len(rows) <= limit,
        groups=tuple(
            LabelGroupRow(f.positive_class, g) for f in fairnesses[:limit] for g in f.groups
        ),
        every_label=len(fairnesses) <= limit,
        unjudged=tuple(f.positive_class for f in fairnesses if not f.disparities),
        min_group_size=first.min_group_size,
        resamples=first.resamples,
        resampled=resampling.describe(),
        rate_interval=resampling.rate_interval,
        binned=first.binned,
        skipped=first.skipped,
    )
