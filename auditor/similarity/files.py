"""The similarity stage's files: ``embeddings.npy``, ``projections.csv``,
``agreement.csv``, ``neighbours.csv``, ``duplicates.csv`` and ``leakage.csv``, and its
part of ``metrics.json``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor.similarity.analysis import Similarity

__all__ = ["duplicates_frame", "similarity_document", "similarity_frames", "write_embeddings"]


def _paths(predictions: pd.DataFrame, rows: np.ndarray) -> pd.Series:
    return predictions["path"].iloc[rows].reset_index(drop=True)


def duplicates_frame(similarity: Similarity, predictions: pd.DataFrame) -> pd.DataFrame:
    """Each pair of validation images that are near-duplicates (see
    :class:`~auditor.similarity.analysis.Duplicates`) or byte-identical: ``row_a, row_b,
    path_a, path_b, label_a, label_b, cosine, identical`` (rows of ``predictions.csv``)."""
    pairs = similarity.duplicates
    first, second = pairs.rows[:, 0], pairs.rows[:, 1]
    labels = predictions["label"].reset_index(drop=True)
    return pd.DataFrame(
        {
            "row_a": pd.Series(first, dtype="int64"),
            "row_b": pd.Series(second, dtype="int64"),
            "path_a": _paths(predictions, first).astype("string"),
            "path_b": _paths(predictions, second).astype("string"),
            "label_a": labels.iloc[first].reset_index(drop=True).astype("string"),
            "label_b": labels.iloc[second].reset_index(drop=True).astype("string"),
            "cosine": pd.Series(pairs.cosine, dtype="float64"),
            "identical": pd.Series(pairs.identical, dtype="bool"),
        }
    )


def _neighbours_frame(similarity: Similarity, predictions: pd.DataFrame) -> pd.DataFrame:
    """Each explained case's nearest validation images: ``case_row, case_path, rank, row,
    path, label, prediction, cosine``."""
    records = []
    k = similarity.settings.neighbours
    for case in similarity.cases:
        for rank, (row, cosine) in enumerate(
            zip(
                similarity.neighbours.index[case, :k],
                similarity.neighbours.similarity[case, :k],
                strict=True,
            ),
            start=1,
        ):
            records.append(
                {
                    "case_row": case,
                    "case_path": predictions["path"].iloc[case],
                    "rank": rank,
                    "row": int(row),
                    "path": predictions["path"].iloc[int(row)],
                    "label": predictions["label"].iloc[int(row)],
                    "prediction": predictions["prediction"].iloc[int(row)],
                    "cosine": float(cosine),
                }
            )
    columns = ["case_row", "case_path", "rank", "row", "path", "label", "prediction", "cosine"]
    return pd.DataFrame(records, columns=columns)


def similarity_frames(
    similarity: Similarity | None, predictions: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """File name → frame, for the files the stage writes (none when it did not run)."""
    if similarity is None:
        return {}
    projections = pd.concat(
        [
            pd.DataFrame(
                {
                    "method": p.method,
                    "row": p.rows,
                    "path": _paths(predictions, p.rows),
                    "x": p.points[:, 0].astype("float64"),
                    "y": p.points[:, 1].astype("float64"),
                }
            )
            for p in similarity.projections
        ],
        ignore_index=True,
    )
    holm = (math.nan, math.nan, *similarity.holm)  # class and correct: described only
    agreement = pd.DataFrame(
        [
            {
                "variable": a.variable,
                "values": a.values,
                "observed": a.observed,
                "expected": a.expected,
                "p_value": a.p_value,
                "p_holm": p,
                "within_class": a.within_class,
            }
            for a, p in zip(similarity.agreements, holm, strict=True)
        ]
    )
    frames = {
        "projections.csv": projections,
        "agreement.csv": agreement,
        "neighbours.csv": _neighbours_frame(similarity, predictions),
        "duplicates.csv": duplicates_frame(similarity, predictions),
    }
    if similarity.leakage is not None:
        frames["leakage.csv"] = similarity.leakage.pairs
    return frames


def write_embeddings(similarity: Similarity | None, store: Any, folder: Path) -> None:
    """``embeddings.npy`` (see :mod:`auditor.similarity.embeddings`), when the stage ran."""
    if similarity is not None and store is not None:
        store.write(folder / "embeddings.npy")


def similarity_document(similarity: Similarity | None) -> dict[str, Any] | None:
    """The ``similarity`` part of ``metrics.json``."""
    if similarity is None:
        return None
    leakage = similarity.leakage
    duplicates = similarity.duplicates
    return {
        "embedding": similarity.site.description,
        "dimensions": similarity.dimensions,
        "projections": [
            {
                "method": p.method,
                "images": len(p.rows),
                "trustworthiness": None if math.isnan(p.trustworthiness) else p.trustworthiness,
                "explained_variance": list(p.explained),
            }
            for p in similarity.projections
        ],
        "neighbours": similarity.settings.agreement_neighbours,
        "agreement": [
            {
                "variable": a.variable,
                "observed": a.observed,
                "expected": a.expected,
                "p_value": a.p_value,
                "p_holm": p,
                "within_class": a.within_class,
            }
            for a, p in zip(similarity.agreements, (None, None, *similarity.holm), strict=True)
        ],
        "organised_by": [a.variable for a, _ in similarity.organised_by()],
        "duplicate_cosine": None if math.isinf(duplicates.threshold) else duplicates.threshold,
        "near_duplicates": len(duplicates.rows),
        "identical": int(duplicates.identical.sum()),
        "leakage": None
        if leakage is None
        else {
            "training_images": leakage.images,
            "pairs": len(leakage.pairs),
            "identical": int(leakage.pairs["identical"].sum()),
            "shared_patients": len(leakage.shared_patients),
        },
    }
