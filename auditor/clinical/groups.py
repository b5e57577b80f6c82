"""Metadata columns as groups of images: values as they are, numbers binned into quartiles.

A column is never dropped silently: one with too many values is returned as skipped,
with the reason, for the report to say.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd

__all__ = ["EMPTY", "Grouping", "metadata_groups"]

EMPTY = "(empty)"
"""The group of images whose value is missing."""

QUARTILES = 4


@dataclass(frozen=True)
class Grouping:
    """Each metadata column's group per image, and the columns not broken down.

    Attributes:
        groups: Column → the group of each image (strings, aligned with the predictions).
        binned: Columns of numbers binned into quartiles.
        skipped: ``(column, reason)`` for each column not broken down.
    """

    groups: dict[str, pd.Series]
    binned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]

    @property
    def empty(self) -> bool:
        """Whether there was no metadata column at all."""
        return not self.groups and not self.skipped


def _quartiles(numbers: pd.Series) -> pd.Series:
    """Quartile bins named by their range, ``"20–36"`` (the first includes its lower end)."""
    bins, edges = pd.qcut(numbers, QUARTILES, duplicates="drop", retbins=True)
    names = [f"{low:g}–{high:g}" for low, high in itertools.pairwise(edges)]
    codes = bins.cat.codes.to_numpy()
    named = [names[code] if code >= 0 else pd.NA for code in codes]
    return pd.Series(named, index=numbers.index, dtype="string")


def metadata_groups(
    predictions: pd.DataFrame, columns: tuple[str, ...], max_groups: int
) -> Grouping:
    """Group the images by each metadata column.

    A column whose every non-empty value is a number and which has more than four
    distinct values is binned into quartiles; a column with more than ``max_groups``
    groups after that is skipped, with the reason.
    """
    groups: dict[str, pd.Series] = {}
    binned: list[str] = []
    skipped: list[tuple[str, str]] = []
    for column in columns:
        raw = predictions[column].fillna("").astype("string")
        present = raw != ""
        numbers = pd.to_numeric(raw.where(present), errors="coerce")
        if present.any() and numbers[present].notna().all() and numbers.nunique() > QUARTILES:
            values = _quartiles(numbers).fillna(EMPTY)
            binned.append(column)
        else:
            values = raw.where(present, EMPTY)
        count = values.nunique()
        if count > max_groups:
            skipped.append(
                (column, f"{count:,} values, more than max-groups ({max_groups}); not broken down")
            )
        else:
            groups[column] = values.reset_index(drop=True)
    return Grouping(groups, tuple(binned), tuple(skipped))
