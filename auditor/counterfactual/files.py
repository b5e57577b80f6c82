"""The counterfactual stage's file (``counterfactuals.csv``), its part of
``metrics.json``, and the counts the report's sentences read (from the same frame)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from auditor.counterfactual.stage import Counterfactuals

__all__ = [
    "REMOVED",
    "ArtifactCount",
    "KindCount",
    "artifact_counts",
    "counterfactual_document",
    "kind_counts",
    "region_counts",
]

REMOVED = 0.5
"""Share of a concept's mask a counterfactual's change must cover to remove it."""


@dataclass(frozen=True)
class KindCount:
    """How one kind of counterfactual came out over the searches (one per case; a
    multi-label model's misclassified image, one per wrong call).

    Attributes:
        kind: ``"segments"`` or ``"gradient"``.
        searched: Searches.
        valid: Searches whose counterfactual changes the call (re-checked by a fresh pass).
        misclassified, misclassified_valid: The same for the misclassified cases'.
        segments: Mean segments removed, over the valid ones (NaN for gradient).
        pixels: Mean share of the pixels changed, over the valid ones.
        l1: Mean absolute change per pixel and channel, over the valid ones.
        passes: Mean forward passes per case.
    """

    kind: str
    searched: int
    valid: int
    misclassified: int
    misclassified_valid: int
    segments: float
    pixels: float
    l1: float
    passes: float


@dataclass(frozen=True)
class ArtifactCount:
    """Counterfactuals against an artefact concept, for one kind, counted in images (a
    multi-label model's image may have several, one per label flipped).

    Attributes:
        shown: Images that show the concept and have a valid counterfactual.
        removed: Of them, those with one whose change covers at least :data:`REMOVED` of
            it.
        misclassified_shown, misclassified_removed: The same for misclassified images.
    """

    concept: str
    kind: str
    shown: int
    removed: int
    misclassified_shown: int
    misclassified_removed: int


@dataclass(frozen=True)
class RegionCount:
    """Valid counterfactuals of one kind whose case's group has a flagged shortcut region.

    Attributes:
        regions: The regions named (``"top-left corner"``).
        valid: Such counterfactuals.
        inside: Of them, those with at least :data:`REMOVED` of the change in the region.
    """

    kind: str
    regions: tuple[str, ...]
    valid: int
    inside: int


COUNTED = ("segments",)
"""The kinds whose changed region is counted against concepts and shortcut regions. A
gradient counterfactual's change is spread over the whole image (Adam's first steps move
every pixel with a gradient by about the learning rate), so its region says little; its
coverage stays in ``counterfactuals.csv``."""


def region_counts(frame: pd.DataFrame) -> tuple[RegionCount, ...]:
    counts = []
    for kind, rows in frame[frame["kind"].isin(COUNTED)].groupby("kind", sort=False):
        valid = rows[rows["valid"].astype(bool) & (rows["shortcut_region"] != "")]
        if len(valid):
            inside = int((valid["in_shortcut_region"] >= REMOVED).sum())
            regions = tuple(sorted(set(valid["shortcut_region"])))
            counts.append(RegionCount(str(kind), regions, len(valid), inside))
    return tuple(counts)


def kind_counts(frame: pd.DataFrame) -> tuple[KindCount, ...]:
    counts = []
    for kind, rows in frame.groupby("kind", sort=False):
        valid = rows[rows["valid"].astype(bool)]
        wrong = rows[rows["role"] == "misclassified"]
        wrong_valid = int(wrong["valid"].astype(bool).sum())
        counts.append(
            KindCount(
                str(kind), len(rows), len(valid), len(wrong), wrong_valid,
                float(valid["segments"].mean()) if kind == "segments" else float("nan"),
                float(valid["pixels"].mean()), float(valid["l1"].mean()),
                float(rows["passes"].mean()),
            )
        )  # fmt: skip
    return tuple(counts)


def _images(rows: pd.DataFrame, role: str | None = None) -> int:
    """The images among ``rows`` (of one ``role``, when given)."""
    if role is not None:
        rows = rows[rows["role"] == role]
    return int(rows["index"].nunique())


def artifact_counts(result: Counterfactuals) -> tuple[ArtifactCount, ...]:
    """For each artefact concept and kind: the images that show the concept and have a
    valid counterfactual, and how many have one that removes it (covers at least
    :data:`REMOVED` of it)."""
    counts = []
    frame = result.frame[result.frame["kind"].isin(COUNTED)]
    for concept in result.artifacts:
        column = f"covers_{concept}"
        for kind, rows in frame.groupby("kind", sort=False):
            shown = rows[rows["valid"].astype(bool) & rows[column].notna()]
            removed = shown[shown[column] >= REMOVED]
            counts.append(
                ArtifactCount(
                    concept, str(kind), _images(shown), _images(removed),
                    _images(shown, "misclassified"), _images(removed, "misclassified"),
                )
            )  # fmt: skip
    return tuple(counts)


def counterfactual_document(result: Counterfactuals | None) -> dict[str, Any] | None:
    """The ``counterfactuals`` part of ``metrics.json``."""
    if result is None:
        return None
    return {
        "fill": result.fill,
        "removed_share": REMOVED,
        "left_out": result.left_out,
        "kinds": [
            {
                "kind": k.kind,
                "searched": k.searched,
                "valid": k.valid,
                "misclassified": k.misclassified,
                "misclassified_valid": k.misclassified_valid,
                "mean_segments": None if k.segments != k.segments else k.segments,
                "mean_pixels": None if k.pixels != k.pixels else k.pixels,
                "mean_passes": k.passes,
            }
            for k in kind_counts(result.frame)
        ],
        "artifacts": [
            {
                "concept": a.concept,
                "kind": a.kind,
                "shown": a.shown,
                "removed": a.removed,
                "misclassified_shown": a.misclassified_shown,
                "misclassified_removed": a.misclassified_removed,
            }
            for a in artifact_counts(result)
        ],
        "shortcut_regions": [
            {"kind": r.kind, "regions": list(r.regions), "valid": r.valid, "inside": r.inside}
            for r in region_counts(result.frame)
        ],
    }
