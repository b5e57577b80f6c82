"""The generated datasheet (after Gebru et al., "Datasheets for Datasets", 2021): what
the validation set is made of, counted from ``predictions.csv``.

Composition is label × each metadata column, with the column's values grouped as the
subgroup analysis groups them (numbers in quartiles; at most ``max-groups`` values) and
empty values counted as ``(empty)``. Duplicates are files with identical bytes (the same
SHA-256), whatever their names.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from auditor.clinical.groups import EMPTY, metadata_groups

__all__ = [
    "DUPLICATES_LISTED",
    "Composition",
    "Duplicate",
    "composition",
    "duplicates",
    "duplicates_sentence",
]

DUPLICATES_LISTED = 10
"""Groups of identical files listed (all are counted)."""


@dataclass(frozen=True)
class Composition:
    """One metadata column's images per value and true class.

    Attributes:
        labels: The true classes with images, in output order.
        rows: ``(value, images per label, total)``, values in order, ``(empty)`` last.
        missing: Images with no value.
        binned: Whether the values are quartiles of a number.
    """

    column: str
    labels: tuple[str, ...]
    rows: tuple[tuple[str, tuple[int, ...], int], ...]
    missing: int
    binned: bool


@dataclass(frozen=True)
class Duplicate:
    """Files with identical bytes: their paths, and whether their labels disagree."""

    sha256: str
    paths: tuple[str, ...]
    conflicting: bool


def composition(
    predictions: pd.DataFrame, columns: tuple[str, ...], labels: tuple[str, ...], max_groups: int
) -> tuple[tuple[Composition, ...], tuple[tuple[str, str], ...]]:
    """Each column's label × value counts, and ``(column, reason)`` for columns with too
    many values to tabulate."""
    grouping = metadata_groups(predictions, columns, max_groups)
    truth = predictions["label"].astype("string").reset_index(drop=True)
    present = tuple(label for label in labels if (truth == label).any())
    tables = []
    for column, values in grouping.groups.items():
        counts = pd.crosstab(values, truth).reindex(columns=list(present), fill_value=0)
        order = sorted(counts.index, key=lambda v: (v == EMPTY, _sort_key(v)))
        rows = tuple(
            (str(value), tuple(int(n) for n in counts.loc[value]), int(counts.loc[value].sum()))
            for value in order
        )
        missing = int((values == EMPTY).sum())
        tables.append(Composition(column, present, rows, missing, column in grouping.binned))
    return tuple(tables), grouping.skipped


def _sort_key(value: str) -> tuple[float, str]:
    """Quartile ranges and numbers in numeric order, other values alphabetically."""
    head = value.split("–")[0]
    try:
        return float(head), value
    except ValueError:
        return float("inf"), value


def duplicates(predictions: pd.DataFrame) -> tuple[Duplicate, ...]:
    """Every group of two or more evaluated files with identical bytes, largest first."""
    hashed = predictions[predictions["sha256"].fillna("") != ""]
    groups = hashed.groupby("sha256", sort=True)
    found = [
        Duplicate(str(sha), tuple(group["path"].astype(str)), group["label"].nunique() > 1)
        for sha, group in groups
        if len(group) > 1
    ]
    return tuple(sorted(found, key=lambda d: (-len(d.paths), d.paths)))


def duplicates_sentence(predictions: pd.DataFrame) -> str:
    """The byte-identical evaluated images in one sentence ("" when there are none)."""
    found = duplicates(predictions)
    if not found:
        return ""
    images = sum(len(d.paths) for d in found)
    conflicting = sum(d.conflicting for d in found)
    labels = f", {conflicting} of them with different labels" if conflicting else ""
    return (
        f"{images:,} evaluated images are byte-identical copies in {len(found):,} group(s)"
        f"{labels}: each copy counts again in every figure."
    )
