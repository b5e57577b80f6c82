"""The operating point of a multi-label model, label by label.

Each label is read as the test it is at its own threshold (``label-thresholds``; the
image has the label, the model called it) exactly as a single-label model's positive
class is at a declared threshold (:func:`auditor.clinical.operating.operating_point`):
sensitivity, specificity, PPV and NPV with their 95% intervals, the ROC curve with its
AUC and band, the precision-recall curve with its average precision and band, and the
decision curve. No threshold is chosen on the audited data (the label's is used), and
no PPV or NPV is given at a declared ``prevalence``: one prevalence is not every
label's. Each label draws its own seeded stream, from the seed and its position in the
model's output.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from auditor.clinical.operating import Operating, operating_point
from auditor.clinical.settings import ClinicalSettings
from auditor.multilabel.evaluation import label_matrix
from auditor.resample import Resampling

__all__ = ["STREAM", "label_operating"]

STREAM = 1_000_037
"""The labels' random draws start at ``[seed, STREAM, label]``: beyond any label's index,
so no other analysis's stream (the dependence test's ``[seed, label]``) is the same."""


def label_operating(
    predictions: pd.DataFrame, names: tuple[str, ...], thresholds: tuple[float, ...],
    settings: ClinicalSettings, resamples: int, resampling: Resampling,
) -> tuple[Operating | None, ...]:  # fmt: skip
    """Each label's operating point at its threshold, in output order (``None`` for a
    label every image has, or none)."""
    has = label_matrix(predictions["label"], names)
    found = []
    for j, (name, threshold) in enumerate(zip(names, thresholds, strict=True)):
        frame = pd.DataFrame(
            {"label": np.where(has[:, j], name, ""), f"p_{name}": predictions[f"p_{name}"]}
        )
        at = dataclasses.replace(
            settings, threshold=threshold, target_sensitivity=None, target_specificity=None,
            prevalence=None,
        )  # fmt: skip
        found.append(operating_point(frame, name, at, resamples, resampling, (STREAM, j)))
    return tuple(found)
