"""The subgroups section: the test's rates per value of each metadata column, and their
disparities (fairlearn's metrics; :mod:`auditor.clinical.fairness`); for a model without
a positive class, accuracy per value, with Wilson intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditor.aggregate.figures import figure_uri, interval_errors, styled_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.clinical.fairness import DISPARITIES, WORST, Fairness, GroupMetrics
from auditor.clinical.rates import wilson_rate
from auditor.metrics import Estimate
from auditor.report.format import shorten
from auditor.resample import Resampling

__all__ = [
    "MAX_SUBGROUP_VALUES",
    "DisparityRow",
    "FairnessView",
    "SubgroupRow",
    "SubgroupsView",
    "disparity_rows",
    "subgroup_table",
    "subgroups_view",
    "wilson_interval",
]

MAX_SUBGROUP_VALUES = 20
"""A metadata column with more distinct values than this is not broken down."""


@dataclass(frozen=True)
class SubgroupRow:
    column: str
    value: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class DisparityRow:
    """One column's disparities (in :data:`DISPARITIES` order)."""

    column: str
    values: tuple[Estimate, ...]


@dataclass(frozen=True)
class FairnessView:
    """The test's rates per group and the disparities of each column."""

    positive_class: str
    groups: tuple[GroupMetrics, ...]
    disparity_names: tuple[str, ...]
    disparities: tuple[DisparityRow, ...]
    min_group_size: int
    resamples: int
    resampled: str
    rate_interval: str
    binned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    worst_names: tuple[str, ...]
    worst: tuple[tuple[str, tuple[str, ...]], ...]
    intersections: tuple[str, ...]
    forest: str


@dataclass(frozen=True)
class SubgroupsView:
    """The subgroups section: with a positive class, ``fairness``; else accuracy ``rows``
    (a multi-label model's: subset accuracy, every label right) and the column limit
    they obey."""

    rows: tuple[SubgroupRow, ...]
    max_values: int
    fairness: FairnessView | None = None
    multi_label: bool = False


_MEASURE_NAMES = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "accuracy": "Accuracy",
    "auc": "ROC AUC",
    "ece": "ECE (highest)",
}

_FOREST_LABEL = 40
"""Characters of a group's label on the forest plot (the table shows more)."""


def forest_figure(groups: tuple[GroupMetrics, ...], overall: tuple[float, float]) -> str:
    """Sensitivity and specificity of each judged group with 95% intervals, side by side,
    one row per group (column: value), the overall rates dashed; "" without a group."""
    judged = [g for g in groups if not g.too_few]
    if not judged:
        return ""
    labels = [shorten(f"{g.column}: {g.value}", _FOREST_LABEL) for g in judged]
    y = np.arange(len(judged))[::-1]
    with styled_figure(7.0, 0.9 + 0.2 * len(judged)) as figure:
        panels = figure.subplots(1, 2, sharey=True)
        for axes, measure, reference in zip(
            panels, ("sensitivity", "specificity"), overall, strict=True
        ):
            rates = [getattr(g, measure) for g in judged]
            values = np.array([r.value for r in rates])
            errors = interval_errors(values, [r.ci_low for r in rates], [r.ci_high for r in rates])
            axes.errorbar(values, y, xerr=errors, fmt="o", markersize=3,
                          color="#4C72B0", capsize=2)  # fmt: skip
            axes.axvline(reference, color="#888888", linestyle="--", linewidth=0.8)
            axes.set_xlim(-0.02, 1.02)
            axes.set_title(measure)
        panels[0].set_yticks(y, labels)
        figure.tight_layout()
        return figure_uri(figure)


def disparity_rows(fairness: Fairness) -> tuple[DisparityRow, ...]:
    """Each compared column's disparities, in :data:`DISPARITIES` order."""
    columns = dict.fromkeys(d.column for d in fairness.disparities)
    return tuple(
        DisparityRow(
            column=column,
            values=tuple(
                Estimate(d.value, d.ci_low, d.ci_high)
                for d in fairness.disparities
                if d.column == column
            ),
        )
        for column in columns
    )


def _fairness_view(
    fairness: Fairness, resampling: Resampling, intersections: tuple[str, ...],
    overall: tuple[float, float],
) -> FairnessView:  # fmt: skip
    return FairnessView(
        positive_class=fairness.positive_class,
        groups=fairness.groups,
        disparity_names=DISPARITIES,
        disparities=disparity_rows(fairness),
        min_group_size=fairness.min_group_size,
        resamples=fairness.resamples,
        resampled=resampling.describe(),
        rate_interval=resampling.rate_interval,
        worst_names=tuple(_MEASURE_NAMES[m] for m in WORST),
        worst=tuple(
            (column, tuple(fairness.lowest.get((column, m), "—") for m in WORST))
            for column in dict.fromkeys(column for column, _ in fairness.lowest)
        ),
        intersections=intersections,
        forest=forest_figure(fairness.groups, overall),
        binned=fairness.binned,
        skipped=fairness.skipped,
    )


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval for a proportion (better than the normal one for small n);
    NaN for no trials (:func:`auditor.clinical.rates.wilson_rate`)."""
    rate = wilson_rate(successes, n)
    return (rate.ci_low, rate.ci_high)


def subgroup_table(predictions: pd.DataFrame, columns: tuple[str, ...]) -> tuple[SubgroupRow, ...]:
    """Accuracy per value of each metadata column with at most 20 distinct values."""
    rows: list[SubgroupRow] = []
    for column in columns:
        values = predictions[column].fillna("")
        if values.nunique() > MAX_SUBGROUP_VALUES:
            continue
        grouped = predictions.groupby(values, sort=True)["correct"].agg(["sum", "count"])
        for value, (hits, count) in grouped.iterrows():
            low, high = wilson_interval(int(hits), int(count))
            rows.append(
                SubgroupRow(column, str(value) or "(empty)", int(count), hits / count, low, high)
            )
    return tuple(rows)


def subgroups_view(inputs: AuditInputs) -> SubgroupsView | None:
    """The subgroup tables, or ``None`` when the data has no column to break down."""
    fairness = inputs.clinical.fairness
    if fairness is not None:
        clinical = inputs.clinical
        operating = clinical.operating
        overall = (
            (operating.sensitivity.value, operating.specificity.value)
            if operating is not None
            else (float("nan"), float("nan"))
        )
        view = _fairness_view(
            fairness, clinical.resampling, clinical.settings.intersections, overall
        )
        return SubgroupsView((), MAX_SUBGROUP_VALUES, view)
    columns = tuple(c for c in inputs.dataset.metadata_columns if c != inputs.config.patient_column)
    rows = subgroup_table(inputs.evaluation.predictions, columns)
    multi_label = inputs.dataset.multi_label
    return SubgroupsView(rows, MAX_SUBGROUP_VALUES, multi_label=multi_label) if rows else None
