"""Shortcut finding: where the evidence of each class lies relative to the region of interest.

For the maps of trusted methods (those that pass the randomisation check and beat a
random ranking), each case's positive attribution is scaled to sum to 1. A group of
cases (a predicted class, or one kind of error) then has a share of its evidence
outside the mask, and a mean map. The outside evidence is split over a 3×3 grid of the
image, leaving out a margin of 1/16 of the image's side around the mask (where a
coarse map spills over the region's border): when most of the evidence lies outside
the mask *and* one cell holds at least ``concentration`` times its share of the
outside area, the group is flagged with that cell named ("top-left corner"): a model
looking at a corner marker or a ruler instead of the lesion shows up there.

A finding rests on images, not maps: each image's outside share is the mean over the
methods read, the interval resamples images, and a group of fewer than ``min_images``
images is shown as too few to judge, never flagged (two images once made a "finding").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import binary_dilation

from auditor.explain.store import Case, MapStore
from auditor.measure.similarity import mean_ci, min_max

__all__ = [
    "EvidenceGroup",
    "GroupCase",
    "Shortcuts",
    "find_shortcuts",
    "region_name",
    "region_share",
    "share_in_region",
]

_ROWS = ("top", "middle", "bottom")
_COLUMNS = ("left", "centre", "right")


def region_name(row: int, column: int) -> str:
    """The name of a cell of the 3×3 grid, e.g. ``top-left corner``, ``left edge``, ``centre``."""
    if row == 1 and column == 1:
        return "centre"
    if row == 1:
        return f"{_COLUMNS[column]} edge"
    if column == 1:
        return f"{_ROWS[row]} edge"
    return f"{_ROWS[row]}-{_COLUMNS[column]} corner"


@dataclass(frozen=True)
class GroupCase:
    """One explained case as the shortcut finding groups it.

    Attributes:
        case: The explained case (its maps explain the predicted class).
        label: True class name.
        prediction: Predicted class name.
        mask: ``(H, W)`` region of interest.
    """

    case: Case
    label: str
    prediction: str
    mask: NDArray[np.bool_] = field(repr=False)


@dataclass(frozen=True)
class EvidenceGroup:
    """Where one group's evidence lies.

    Attributes:
        kind: ``class`` (cases predicted as ``name``) or ``error`` (a true → predicted pair).
        name: ``malignant`` or ``benign → malignant``.
        n: Images in the group.
        outside: Mean over images of the share of the positive evidence outside the mask
            (each image's share averaged over the methods), with its 95% CI over images.
        outside_area: Mean share of the image outside the mask (an even map's share).
        region: The grid cell holding most of the outside evidence.
        region_share: Its share of the outside evidence (away from the mask's border).
        region_area: Its share of that outside area.
        flagged: Most evidence outside the mask, concentrated in ``region``, in at least
            ``min_images`` images.
        too_few: Fewer images than ``min_images``: shown, not judged.
        mean_maps: Method key → ``(H, W)`` mean min-max scaled map.
        mean_mask: ``(H, W)`` share of the group's masks covering each pixel.
    """

    kind: str
    name: str
    n: int
    outside: tuple[float, float, float]
    outside_area: float
    region: str
    region_share: float
    region_area: float
    flagged: bool
    too_few: bool
    mean_maps: dict[str, NDArray[np.float64]] = field(repr=False)
    mean_mask: NDArray[np.float64] = field(repr=False)

    @property
    def label(self) -> str:
        """``predicted malignant`` or ``benign → malignant``."""
        return f"predicted {self.name}" if self.kind == "class" else self.name

    @property
    def concentration(self) -> float:
        """How many times its area share the region's evidence share is."""
        return self.region_share / self.region_area if self.region_area > 0 else float("nan")

    def sentence(self) -> str:
        """The finding in words, with its figures."""
        what = (
            f"the evidence for predicting {self.name}"
            if self.kind == "class"
            else f"the evidence in {self.name} errors"
        )
        return (
            f"{self.outside[0]:.0%} of {what} (n = {self.n}; 95% CI "
            f"{self.outside[1]:.0%}–{self.outside[2]:.0%}) lies outside the region of "
            f"interest, which leaves {self.outside_area:.0%} of the image; "
            f"{self.region_share:.0%} of that outside evidence sits in the {self.region} "
            f"({self.region_area:.0%} of the outside area, {self.concentration:.1f}× an even "
            f"spread)."
        )


@dataclass(frozen=True)
class Shortcuts:
    """The shortcut finding.

    Attributes:
        methods: Trusted methods whose maps were read, most faithful first.
        groups: Predicted classes, then error types.
        threshold: Share of evidence outside the mask above which a group can be flagged.
        concentration: How concentrated the outside evidence must be to be flagged.
        min_images: Fewest images a group needs to be judged.
    """

    methods: tuple[str, ...]
    groups: tuple[EvidenceGroup, ...]
    threshold: float
    concentration: float
    min_images: int

    @property
    def flagged(self) -> tuple[EvidenceGroup, ...]:
        return tuple(g for g in self.groups if g.flagged)


def _cells(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(N, H, W)`` → ``(N, 3, 3)`` sums over a 3×3 grid."""
    height, width = values.shape[-2:]
    rows = np.array_split(np.arange(height), 3)
    columns = np.array_split(np.arange(width), 3)
    return np.stack(
        [np.stack([values[:, r][:, :, c].sum(axis=(1, 2)) for c in columns], axis=1) for r in rows],
        axis=1,
    )


def _widened(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask grown by 1/16 of the image's shorter side."""
    margin = max(1, min(mask.shape) // 16)
    return np.asarray(binary_dilation(mask, iterations=margin), dtype=bool)


@dataclass
class _Evidence:
    """A group's normalised positive evidence, gathered over the methods read."""

    shares_by_image: dict[int, list[float]] = field(default_factory=dict)
    outside_maps: list[NDArray[np.float64]] = field(default_factory=list)
    near_masks: list[NDArray[np.bool_]] = field(default_factory=list)
    mean_maps: dict[str, NDArray[np.float64]] = field(default_factory=dict)


def _evidence(cases: list[GroupCase], maps: MapStore, methods: tuple[str, ...]) -> _Evidence:
    """Each image's outside share per method, and the evidence away from the masks."""
    gathered = _Evidence()
    for method in methods:
        found = [(c, maps.get(c.case, method)) for c in cases]
        chosen = [c for c, value in found if value is not None]
        if not chosen:
            continue
        stacked = np.stack([value for _, value in found if value is not None]).astype(np.float64)
        gathered.mean_maps[method] = min_max(stacked).mean(axis=0)
        positive = np.clip(stacked, 0, None)
        total = positive.sum(axis=(1, 2), keepdims=True)
        keep = total[:, 0, 0] > 0
        if not keep.any():  # no positive evidence in any of the group's maps
            continue
        evidence = positive[keep] / total[keep]
        masks = np.stack([c.mask for c in chosen])[keep]
        kept = [c for c, kept in zip(chosen, keep, strict=True) if kept]
        for c, share in zip(kept, (evidence * ~masks).sum(axis=(1, 2)), strict=True):
            gathered.shares_by_image.setdefault(c.case.index, []).append(float(share))
        away = ~np.stack([_widened(mask) for mask in masks])
        gathered.outside_maps.append(evidence * away)
        gathered.near_masks.append(~away)
    return gathered


def _group(
    kind: str,
    name: str,
    cases: list[GroupCase],
    maps: MapStore,
    methods: tuple[str, ...],
    threshold: float,
    concentration: float,
    min_images: int,
    seed: int,
) -> EvidenceGroup | None:
    gathered = _evidence(cases, maps, methods)
    shares_by_image, mean_maps = gathered.shares_by_image, gathered.mean_maps
    outside_maps, masks_used = gathered.outside_maps, gathered.near_masks
    if not shares_by_image:
        return None
    shares = np.array([np.mean(values) for values in shares_by_image.values()])
    widened = np.concatenate(masks_used)
    evidence_cells = _cells(np.concatenate(outside_maps)).sum(axis=0)
    area_cells = _cells((~widened).astype(np.float64)).sum(axis=0)
    row, column = np.unravel_index(int(evidence_cells.argmax()), (3, 3))
    region_share = float(evidence_cells[row, column] / max(evidence_cells.sum(), 1e-12))
    region_area = float(area_cells[row, column] / max(area_cells.sum(), 1e-12))
    outside = mean_ci(shares, seed)
    too_few = len(cases) < min_images
    flagged = not too_few and bool(
        outside[0] >= threshold and region_area > 0 and region_share / region_area >= concentration
    )
    return EvidenceGroup(
        kind=kind,
        name=name,
        n=len(cases),
        outside=outside,
        outside_area=float(1 - np.stack([c.mask for c in cases]).mean()),
        region=region_name(int(row), int(column)),
        region_share=region_share,
        region_area=region_area,
        flagged=flagged,
        too_few=too_few,
        mean_maps=mean_maps,
        mean_mask=np.stack([c.mask for c in cases]).mean(axis=0),
    )


def find_shortcuts(
    cases: list[GroupCase],
    maps: MapStore,
    methods: tuple[str, ...],
    threshold: float = 0.5,
    concentration: float = 2.0,
    min_images: int = 5,
    seed: int = 0,
) -> Shortcuts:
    """Group the cases by predicted class and by error type, and find misplaced evidence.

    Args:
        cases: The explained cases with a mask (maps of their predicted class).
        maps: The ``(H, W)`` maps by case and method.
        methods: The trusted methods to read, most faithful first.
        threshold: Flag a group when at least this share of its evidence is outside the mask...
        concentration: ...and one grid cell holds this many times its share of the outside area,
            in at least ``min_images`` images.
        min_images: Fewest images a group needs to be judged.
        seed: Seed of the bootstrap intervals.
    """
    groups: list[EvidenceGroup] = []
    if methods:
        specs: list[tuple[str, str, list[GroupCase]]] = []
        for name in sorted({c.prediction for c in cases}):
            specs.append(("class", name, [c for c in cases if c.prediction == name]))
        pairs = sorted({(c.label, c.prediction) for c in cases if c.label != c.prediction})
        for label, prediction in pairs:
            chosen = [c for c in cases if (c.label, c.prediction) == (label, prediction)]
            specs.append(("error", f"{label} → {prediction}", chosen))
        for kind, name, chosen in specs:
            group = _group(
                kind, name, chosen, maps, methods, threshold, concentration, min_images, seed
            )
            if group is not None:
                groups.append(group)
    return Shortcuts(methods, tuple(groups), threshold, concentration, min_images)


def share_in_region(mask: NDArray[np.bool_], region: str) -> float:
    """The share of ``mask``'s ``(H, W)`` pixels in the grid cell named ``region`` (NaN
    for an empty mask)."""
    cell = next((r, c) for r in range(3) for c in range(3) if region_name(r, c) == region)
    cells = _cells(np.asarray(mask, dtype=np.float64)[None])[0]
    total = float(cells.sum())
    return float(cells[cell]) / total if total > 0 else float("nan")


def region_share(
    cases: list[Case], maps: MapStore, methods: tuple[str, ...], region: str
) -> dict[int, float]:
    """Each image's share of its positive evidence in the grid cell named ``region``.

    The share is averaged over ``methods`` (those with positive evidence in the image's
    map); an image with none is left out. Keys are sample indices.
    """
    cell = next((r, c) for r in range(3) for c in range(3) if region_name(r, c) == region)
    shares: dict[int, list[float]] = {}
    for case in cases:
        for method in methods:
            value = maps.get(case, method)
            if value is None:
                continue
            positive = np.clip(np.asarray(value, dtype=np.float64), 0, None)[None]
            total = float(positive.sum())
            if total > 0:
                shares.setdefault(case.index, []).append(float(_cells(positive)[0][cell]) / total)
    return {index: float(np.mean(values)) for index, values in shares.items()}
