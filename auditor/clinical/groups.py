"""Metadata columns as groups of images: values as they are, numbers binned into quartiles.

A column is never dropped silently: one with too many values is returned as skipped,
with the reason, for the report to say.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd

from auditor.clinical.settings import INTERSECTION

__all__ = ["EMPTY", "Grouping", "intersection_columns", "intersection_name", "metadata_groups"]

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


def intersection_columns(intersection: str) -> tuple[str, str]:
    """The two columns of a declared intersection (``"site*sex"``)."""
    first, second = (name.strip() for name in intersection.split(INTERSECTION))
    return first, second


def intersection_name(first: str, second: str) -> str:
    """How an intersection is named as a column: ``"site × sex"``."""
    return f"{first} × {second}"


def _intersections(
    groups: dict[str, pd.Series], intersections: tuple[str, ...], max_groups: int
) -> tuple[dict[str, pd.Series], list[tuple[str, str]]]:
    """The declared pairs as more columns (values ``"A × F"``), or why one is skipped."""
    added: dict[str, pd.Series] = {}
    skipped: list[tuple[str, str]] = []
    for declared in intersections:
        first, second = intersection_columns(declared)
        name = intersection_name(first, second)
        missing = [c for c in (first, second) if c not in groups]
        if missing:
            skipped.append((name, f"{', '.join(missing)} not broken down; nor is the pair"))
            continue
        values = groups[first].str.cat(groups[second], sep=" × ")
        count = values.nunique()
        if count > max_groups:
            skipped.append(
                (name, f"{count:,} values, more than max-groups ({max_groups}); not broken down")
            )
        else:
            added[name] = values
    return added, skipped


def metadata_groups(
    predictions: pd.DataFrame,
    columns: tuple[str, ...],
    max_groups: int,
    intersections: tuple[str, ...] = (),
) -> Grouping:
    """Group the images by each metadata column, then by each declared pair of them.

    A column whose every non-empty value is a number and which has more than four
    distinct values is binned into quartiles; a column with more than ``max_groups``
    groups after that is skipped, with the reason. An intersection (``"site*sex"``)
    pairs the two columns' groups (binned ones included) into one more column named
    ``"site × sex"``.
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
    added, not_added = _intersections(groups, intersections, max_groups)
    return Grouping(groups | added, tuple(binned), tuple(skipped + not_added))
