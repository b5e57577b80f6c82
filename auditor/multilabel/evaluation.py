"""A multi-label evaluation: its predictions table and its metrics.

An image is called positive for every label whose probability reaches the label's
threshold; it is *correct* when its called set equals its labels exactly (subset
accuracy's sense), and ``errors`` counts the labels it gets wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray

if TYPE_CHECKING:  # the evaluation's settings live with the stage that imports this
    from auditor.evaluate import EvaluationSettings

from auditor.data import Dataset
from auditor.manifest import LABEL_SEPARATOR, NO_LABEL
from auditor.multilabel.metrics import LabelMetrics, called, compute_label_metrics, label_thresholds
from auditor.predictions import predictions_table
from auditor.resample import Resampling

__all__ = [
    "label_evaluation",
    "label_frame",
    "label_matrix",
    "label_set",
    "truth",
]


def truth(dataset: Dataset, order: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``(N, K)``: which labels each image of ``order`` (sample indices) has."""
    matrix = np.zeros((len(order), len(dataset.classes)), dtype=bool)
    for row, index in enumerate(order.tolist()):
        matrix[row, list(dataset.samples[index].labels)] = True
    return matrix


def label_matrix(cells: Iterable[object], names: tuple[str, ...]) -> NDArray[np.bool_]:
    """``(N, K)``: which of ``names`` each ``label`` or ``prediction`` cell of a
    predictions table lists (``a;b``, ``-`` for none)."""
    listed = [set(str(cell).split(LABEL_SEPARATOR)) for cell in cells]
    matrix = np.array([[name in row for name in names] for row in listed], dtype=bool)
    return matrix.reshape(len(listed), len(names))


def label_set(row: NDArray[np.bool_], names: tuple[str, ...]) -> str:
    """The labels a row marks as a manifest writes them: ``a;b``, or ``-`` for none."""
    return LABEL_SEPARATOR.join(n for n, on in zip(names, row, strict=True) if on) or NO_LABEL


def label_frame(
    dataset: Dataset,
    order: NDArray[np.int64],
    probabilities: NDArray[np.float32],
    calls: NDArray[np.bool_],
    hashes: dict[int, str],
) -> pd.DataFrame:
    """The predictions table: ``index, path, label, prediction, correct, errors``, each
    label's probability ``p_<label>``, the manifest's metadata and ``sha256``."""
    names = dataset.classes
    has = truth(dataset, order)
    samples = [dataset.samples[i] for i in order.tolist()]
    columns = {
        "index": pd.Series(order, dtype="int64"),
        "path": pd.Series([s.relpath for s in samples], dtype="string"),
        "label": pd.Series([label_set(r, names) for r in has], dtype="string"),
        "prediction": pd.Series([label_set(r, names) for r in calls], dtype="string"),
        "correct": pd.Series((calls == has).all(axis=1), dtype="bool"),
        "errors": pd.Series((calls != has).sum(axis=1), dtype="int64"),
    }
    return predictions_table(dataset, order, columns, probabilities, hashes)


def label_evaluation(
    dataset: Dataset,
    order: NDArray[np.int64],
    probabilities: NDArray[np.float32],
    hashes: dict[int, str],
    settings: EvaluationSettings,
) -> tuple[pd.DataFrame, LabelMetrics]:
    """The predictions table (:func:`label_frame`) and the metrics of a multi-label
    evaluation, each label called at its ``label-thresholds`` value."""
    thresholds = label_thresholds(settings.label_thresholds, dataset.classes)
    calls = called(probabilities, thresholds)
    predictions = label_frame(dataset, order, probabilities, calls, hashes)
    metrics = compute_label_metrics(
        truth(dataset, order), probabilities, dataset.classes, thresholds, settings.bootstrap,
        settings.seed, Resampling.of(predictions, settings.patient_column),
    )  # fmt: skip
    return predictions, metrics
