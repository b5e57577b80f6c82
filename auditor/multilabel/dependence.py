"""Metadata dependence of a multi-label model: does the call of a label depend on a
metadata column, among images alike in that label?

Each label is a test of its own: its images are those with it and those without it
(the true classes ``with <label>`` and ``without <label>``), and an image is called
positive for it when it is in the image's called set (its probability reached the
label's threshold). Per label, every metadata column is compared as a single-label
model's positive class is at its true classes (:func:`auditor.clinical.dependence.
target_dependence`): the label's calls are permuted within the images with it and
within those without, and the p-values are step-down min-P adjusted across the label's
comparisons. They are then multiplied by the number of labels compared (Bonferroni,
capped at 1), so the chance of any false finding over every label stays at most
``dependence-alpha`` whatever the labels' calls share. A joint permutation of every
label's calls keeps that sharing only within images of the same whole set of labels:
strata too small to permute once a data set has more than a few labels. So a label's
calls can follow a column through another label the model confuses it with, whose
prevalence differs with the column: each finding names such a label
(:func:`co_label`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from auditor.clinical.dependence import (
    ColumnDependence,
    Dependence,
    GroupRate,
    having,
    is_finding,
    target_dependence,
)
from auditor.clinical.groups import Grouping
from auditor.clinical.settings import ClinicalSettings
from auditor.multilabel.evaluation import label_matrix
from auditor.resample import Resampling

__all__ = ["CoLabel", "co_label", "label_dependence"]


def _bonferroni(
    rows: list[ColumnDependence], labels: int, settings: ClinicalSettings
) -> list[ColumnDependence]:
    """``rows`` with their adjusted p-values multiplied by ``labels`` (at most 1) and
    their findings judged again on them, or said as a label's too few."""
    adjusted = []
    for row in rows:
        if row.label is not None:
            row = replace(row, p_adjusted=min(1.0, labels * row.p_adjusted))
            row = replace(row, finding=is_finding(row, settings))
        else:
            reason = (
                f"neither the images with {row.target} nor those without it have two values "
                f"with at least {settings.min_group_size} images (min-group-size); too few "
                "to judge"
            )
            row = replace(row, reason=reason)
        adjusted.append(row)
    return adjusted


def label_dependence(
    predictions: pd.DataFrame,
    grouping: Grouping,
    names: tuple[str, ...],
    settings: ClinicalSettings,
    resampling: Resampling | None = None,
    resamples: int = 1000,
) -> Dependence | None:
    """Each metadata column's dependence at each label, or ``None`` without columns.

    Args:
        predictions: A multi-label ``predictions.csv``'s frame: its ``label`` and
            ``prediction`` cells (``a;b``, ``-`` for none) and the metadata columns.
        grouping: The images grouped by each metadata column.
        names: The model's labels, in output order.
        settings: Group sizes, thresholds, permutations and seed.
        resampling: Images (default) or a patient column's groups, as for a single-label
            model (:func:`auditor.clinical.dependence.metadata_dependence`).
        resamples: Bootstrap resamples of the intervals over groups.
    """
    if grouping.empty:
        return None
    resampling = resampling or Resampling()
    truth = label_matrix(predictions["label"], names)
    calls = label_matrix(predictions["prediction"], names)
    rates: list[GroupRate] = []
    per_label: list[list[ColumnDependence]] = []
    for k, name in enumerate(names):
        labels = pd.Series([having(name, bool(has)) for has in truth[:, k]])
        label_rates, rows = target_dependence(
            name, labels, calls[:, k], grouping, settings, (resampling, resamples),
            [settings.seed, k],
        )  # fmt: skip
        rates.extend(label_rates)
        per_label.append(rows)
    compared = sum(any(c.label is not None for c in rows) for rows in per_label)
    columns = [c for rows in per_label for c in _bonferroni(rows, compared, settings)]
    return Dependence(
        settings=settings,
        positive_class=None,
        rates=tuple(rates),
        columns=tuple(columns),
        binned=grouping.binned,
        skipped=grouping.skipped,
        targets=compared,
    )


@dataclass(frozen=True)
class CoLabel:
    """Another label whose prevalence differs between a finding's two values, among the
    images it compares: the model's calls of the finding's label may follow it (a model
    that confuses the two labels shows the same difference without reading the column).

    Attributes:
        label: The other label.
        high, low: Its prevalence among the compared images with the finding's high and
            low value.
        n_high, n_low: Those images.
    """

    label: str
    high: float
    low: float
    n_high: int
    n_low: int


def co_label(
    finding: ColumnDependence, predictions: pd.DataFrame, grouping: Grouping,
    names: tuple[str, ...], settings: ClinicalSettings,
) -> CoLabel | None:  # fmt: skip
    """The other label whose prevalence differs most between ``finding``'s two values
    among the images it compares, when that difference is at least
    ``dependence-difference`` (else ``None``)."""
    truth = label_matrix(predictions["label"], names)
    target = truth[:, names.index(finding.target)]
    inside = np.array([having(finding.target, bool(t)) == finding.label for t in target])
    values = grouping.groups[finding.column].to_numpy()
    high, low = inside & (values == finding.high), inside & (values == finding.low)
    best: CoLabel | None = None
    for j, name in enumerate(names):
        if name == finding.target:
            continue
        has = truth[:, j]
        shares = float(has[high].mean()), float(has[low].mean())
        if abs(shares[0] - shares[1]) >= settings.dependence_difference and (
            best is None or abs(shares[0] - shares[1]) > abs(best.high - best.low)
        ):
            best = CoLabel(name, *shares, int(high.sum()), int(low.sum()))
    return best
