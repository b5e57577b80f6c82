"""The predictions table of a single-label evaluation (one row per evaluated image), and
the data's identity (:func:`data_sha256`).

A multi-label model's table is :func:`auditor.multilabel.evaluation.label_frame`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from auditor.data import Dataset

__all__ = ["data_entry", "data_sha256", "predictions_frame", "predictions_table"]


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
    return predictions_table(dataset, order, columns, probs, hashes)


def predictions_table(
    dataset: Dataset,
    order: np.ndarray,
    columns: dict[str, pd.Series],
    probabilities: np.ndarray,
    hashes: dict[int, str],
) -> pd.DataFrame:
    """``columns`` (the calls), then each class's (or label's) probability ``p_<name>``,
    the manifest's metadata and ``sha256``, for the samples ``order`` lists."""
    samples = [dataset.samples[i] for i in order.tolist()]
    # One frame from every column at once: inserting K probability columns one by one
    # copies the frame K times (and pandas warns about it for thousands of classes).
    names = [f"p_{name}" for name in dataset.classes]
    probs = pd.DataFrame(probabilities.astype("float64"), columns=names)
    metadata = {
        column: pd.Series([dict(s.metadata).get(column, "") for s in samples], dtype="string")
        for column in dataset.metadata_columns
    }
    sha256 = pd.Series([hashes[s.index] for s in samples], dtype="string", name="sha256")
    return pd.concat([pd.DataFrame(columns), probs, pd.DataFrame(metadata), sha256], axis=1)


def data_entry(dataset: Dataset, index: int, sha256: str) -> tuple[str, ...]:
    """A sample's line of :func:`data_sha256`: its relative path, file SHA-256, class name
    and metadata, so a relabelled image or an edited metadata value is other data."""
    sample = dataset.samples[index]
    metadata = ";".join(f"{name}={value}" for name, value in sample.metadata)
    return (sample.relpath, sha256, dataset.label_text(sample), metadata)


def data_sha256(entries: list[tuple[str, ...]]) -> str:
    """SHA-256 over the entries (:func:`data_entry`; an excluded file: its path and ``""``)
    as tab-separated lines, sorted."""
    digest = hashlib.sha256()
    for entry in sorted(entries):
        digest.update(("\t".join(entry) + "\n").encode())
    return digest.hexdigest()
