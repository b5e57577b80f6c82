"""Failure modes: where the errors are, and which of them the model was sure of.

Errors per true class with those made with confidence at least ``high-confidence``;
the confident errors listed, missed positives (a positive image called something else)
first; and errors per metadata value (numbers binned as everywhere else).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from auditor.clinical.groups import Grouping
from auditor.clinical.settings import ClinicalSettings

__all__ = ["ClassErrors", "ConfidentError", "Failures", "ValueErrors", "failure_modes"]


@dataclass(frozen=True)
class ClassErrors:
    """Errors among the images of one true class."""

    label: str
    n: int
    errors: int
    confident: int


@dataclass(frozen=True)
class ConfidentError:
    """One error made with confidence at least ``high-confidence``.

    Attributes:
        missed: A positive image called something else.
    """

    path: str
    label: str
    prediction: str
    confidence: float
    missed: bool


@dataclass(frozen=True)
class ValueErrors:
    """Errors among the images of one value of one metadata column."""

    column: str
    value: str
    n: int
    errors: int


@dataclass(frozen=True)
class Failures:
    """Failure modes of one evaluation.

    Attributes:
        cut: ``high-confidence``.
        confident: Every confident error: missed positives first, then by confidence.
    """

    cut: float
    positive_class: str | None
    by_class: tuple[ClassErrors, ...]
    confident: tuple[ConfidentError, ...]
    by_value: tuple[ValueErrors, ...]

    @property
    def n_missed(self) -> int:
        """Confident errors that missed a positive image."""
        return sum(e.missed for e in self.confident)


def failure_modes(
    predictions: pd.DataFrame,
    grouping: Grouping,
    classes: tuple[str, ...],
    positive_class: str | None,
    settings: ClinicalSettings,
) -> Failures:
    """Errors by class and by metadata value, and the confident ones listed."""
    wrong = predictions["label"] != predictions["prediction"]
    sure = wrong & (predictions["confidence"] >= settings.high_confidence)
    counts = (
        pd.DataFrame({"label": predictions["label"], "wrong": wrong, "sure": sure})
        .groupby("label")
        .agg(n=("wrong", "size"), errors=("wrong", "sum"), confident=("sure", "sum"))
    )
    per_class = counts.reindex(list(classes), fill_value=0).to_numpy(dtype=int)
    by_class = tuple(
        ClassErrors(name, int(n), int(errors), int(confident))
        for name, (n, errors, confident) in zip(classes, per_class, strict=True)
    )
    rows = predictions[sure]
    confident = sorted(
        (
            ConfidentError(path, label, prediction, confidence, missed=label == positive_class)
            for path, label, prediction, confidence in zip(
                rows["path"].astype(str),
                rows["label"].astype(str),
                rows["prediction"].astype(str),
                rows["confidence"].astype(float),
                strict=True,
            )
        ),
        key=lambda e: (not e.missed, -e.confidence, e.path),
    )
    by_value = []
    for column, values in grouping.groups.items():
        table = pd.DataFrame({"value": values, "wrong": wrong.to_numpy()})
        per_value = table.groupby("value")["wrong"].agg(["size", "sum"]).reset_index()
        for value, n, errors in per_value.itertuples(index=False):
            by_value.append(ValueErrors(column, str(value), int(n), int(errors)))
    return Failures(settings.high_confidence, positive_class, by_class, tuple(confident),
                    tuple(by_value))  # fmt: skip
