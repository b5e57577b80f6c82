"""The predictions table of a single-label evaluation: one row per evaluated image.

A multi-label model's table is :func:`auditor.multilabel.evaluation.label_frame`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.data import Dataset

__all__ = ["predictions_frame"]


def predictions_frame(
    dataset: Dataset,
    order: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    hashes: dict[int, str],
) -> pd.DataFrame:
    """A single-label evaluation's predictions table: ``index, path, label, prediction,
    confidence, correct``, each class's probability ``p_<class>``, the manifest's
    metadata and ``sha256`` (the image file's); ``order`` lists the sample indices."""
    classes = dataset.classes
    preds = probs.argmax(axis=1)
    samples = [dataset.samples[i] for i in order.tolist()]
    columns: dict[str, pd.Series] = {
        "index": pd.Series(order, dtype="int64"),
        "path": pd.Series([s.relpath for s in samples], dtype="string"),
        "label": pd.Series([classes[k] for k in labels], dtype="string"),
        "prediction": pd.Series([classes[k] for k in preds], dtype="string"),
        "confidence": pd.Series(probs.max(axis=1), dtype="float64"),
        "correct": pd.Series(preds == labels, dtype="bool"),
    }
    # One frame from every column at once: inserting K probability columns one by one
    # copies the frame K times (and pandas warns about it for thousands of classes).
    probabilities = pd.DataFrame(probs.astype("float64"), columns=[f"p_{name}" for name in classes])
    metadata = {
        column: pd.Series([dict(s.metadata).get(column, "") for s in samples], dtype="string")
        for column in dataset.metadata_columns
    }
    sha256 = pd.Series([hashes[s.index] for s in samples], dtype="string", name="sha256")
    return pd.concat([pd.DataFrame(columns), probabilities, pd.DataFrame(metadata), sha256], axis=1)
