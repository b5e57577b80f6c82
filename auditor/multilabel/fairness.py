"""Subgroups and fairness of a multi-label model, label by label.

Each label is read as the binary test it is at its threshold (the image has it; the
model called it), and measured per value of each metadata column exactly as a
single-label model's positive class is (:func:`auditor.clinical.fairness.fairness_of`:
prevalence, sensitivity, specificity, PPV, NPV and accuracy with their intervals, the
label's ROC AUC and ECE within the group, and fairlearn's disparities across the groups
large enough to judge, with percentile bootstrap intervals). Each label draws its own
seeded stream, from the seed and its position in the model's output.

Whether a gap is real is the metadata-dependence test's question
(:mod:`auditor.multilabel.dependence`); these are the rates a reviewer reads it by.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.clinical.fairness import BinaryTest, Fairness, fairness_of
from auditor.clinical.groups import Grouping
from auditor.clinical.settings import ClinicalSettings
from auditor.multilabel.evaluation import label_matrix
from auditor.resample import Resampling

__all__ = ["STREAM", "label_fairness"]

STREAM = 1_000_031
"""The labels' random draws start at ``[seed, STREAM, label]``: beyond any label's index,
so no other analysis's stream (the dependence test's ``[seed, label]``) is the same."""


def label_fairness(
    predictions: pd.DataFrame, grouping: Grouping, names: tuple[str, ...],
    settings: ClinicalSettings, resamples: int, resampling: Resampling,
) -> tuple[Fairness, ...]:  # fmt: skip
    """Each label's :class:`~auditor.clinical.fairness.Fairness` (its ``positive_class``:
    the label), in output order; none without a metadata column to break down."""
    if grouping.empty:
        return ()
    has = label_matrix(predictions["label"], names)
    calls = label_matrix(predictions["prediction"], names)
    found = []
    for j, name in enumerate(names):
        scores = predictions[f"p_{name}"].to_numpy(dtype=np.float64)
        test = BinaryTest(name, has[:, j], scores, calls[:, j], (STREAM, j))
        found.append(fairness_of(test, grouping, settings, resamples, resampling))
    return tuple(found)
