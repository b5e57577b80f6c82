"""The subgroups section: accuracy per value of each metadata column, with Wilson intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from auditor.aggregate.inputs import AuditInputs

__all__ = [
    "MAX_SUBGROUP_VALUES",
    "SubgroupRow",
    "SubgroupsView",
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
class SubgroupsView:
    """The subgroups section: its rows and the column limit they obey."""

    rows: tuple[SubgroupRow, ...]
    max_values: int


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for a proportion (better than the normal one for small n)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


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
    """The subgroup table, or ``None`` when the data has no column to break down."""
    rows = subgroup_table(inputs.evaluation.predictions, inputs.dataset.metadata_columns)
    return SubgroupsView(rows, MAX_SUBGROUP_VALUES) if rows else None
