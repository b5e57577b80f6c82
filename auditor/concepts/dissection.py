"""Network dissection (Bau, Zhou, Khosla, Oliva and Torralba, 2017): which units of a
layer detect which concept.

"Network Dissection: Quantifying Interpretability of Deep Visual Representations", CVPR
2017. Each unit's activation map is upsampled (bilinear) to the concept masks' size; the
unit's threshold is the top ``quantile`` of these upsampled values over the whole data
set; the unit's mask is where it reaches the threshold; its IoU with a concept sums the
intersections and the unions over the images annotated with the concept. A unit is
labelled by its best concept when that IoU reaches ``dissection-iou``.

Two departures from NetDissect-Lite, each deliberate:

* The threshold is taken **after** upsampling. NetDissect-Lite takes it on the raw
  low-resolution maps and applies it after upsampling, which empties the masks of small
  concepts (a planted unit: IoU 0.000 instead of 0.083).
* A unit reaches its threshold when its value is **at least** the threshold, so a
  saturated unit (many pixels at its maximum) has a mask, not an empty one.

Memory stays bounded by the number of units, not of images: the threshold is an exact
streaming quantile, found by a per-unit histogram over the unit's range, then the values
in the bin holding the quantile (at most ``cap`` of them in all; beyond that the bin's
lower edge is used and the threshold is marked approximate). The caller streams the
activations (from disk, see :mod:`auditor.concepts.stage`) once per pass: range,
histogram, boundary values, tally.

Own code: NetDissect and NetDissect-Lite read layers through module hooks, which a
TorchScript file does not have; the activations come from the tap layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

__all__ = [
    "Batch",
    "Dissection",
    "UnitThresholds",
    "dissect",
    "upsampled",
]

BINS = 2048
"""Histogram bins per unit for the streaming quantile."""

CAP = 1 << 24
"""Most boundary-bin values kept, over all units, for the exact quantile."""

BLOCK = 1 << 24
"""Most upsampled values held at once (64 MiB of float32)."""


@dataclass(frozen=True)
class Batch:
    """A batch of one layer's activations and the images' concept masks.

    Attributes:
        activations: ``(B, C, h, w)`` float, the layer's output.
        concepts: ``(B, K, H, W)`` bool, each concept's mask at the masks' size.
        annotated: ``(B, K)`` bool, whether each image is annotated with each concept
            (an image without a mask for a concept counts in none of its tallies).
    """

    activations: torch.Tensor
    concepts: torch.Tensor
    annotated: torch.Tensor


def upsampled(activations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, C, H*W)`` float32: each map bilinearly upsampled to ``size`` (no corner
    alignment, as ``torch.nn.functional.interpolate`` and NetDissect)."""
    maps = F.interpolate(activations.float(), size=size, mode="bilinear", align_corners=False)
    return maps.flatten(2)


@dataclass(frozen=True)
class UnitThresholds:
    """Each unit's threshold: the ``k``-th largest upsampled value over the data set.

    Attributes:
        values: ``(C,)`` float64.
        exact: ``(C,)`` bool; ``False`` where the boundary bin held more than the cap
            and its lower edge was used.
        k: The rank of the threshold from the top, ``ceil(quantile × values per unit)``.
    """

    values: NDArray[np.float64]
    exact: NDArray[np.bool_]
    k: int


class _Quantile:
    """The streaming top-``k`` threshold of ``units`` value streams (see the module).

    Every method takes the values of a slice of the units, ``(B, len(units), P)``.
    """

    def __init__(self, low: torch.Tensor, high: torch.Tensor, k: int, cap: int) -> None:
        self.low, self.high, self.k, self.cap = low.float(), high.float(), k, cap
        self.width = ((self.high - self.low) / BINS).clamp(min=1e-30)
        self.counts = torch.zeros(len(low), BINS, dtype=torch.long)
        self.boundary = torch.zeros(len(low), dtype=torch.long)
        self.rank = torch.zeros(len(low), dtype=torch.long)
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _bins(self, values: torch.Tensor, units: slice) -> torch.Tensor:
        """``(B, U, P)`` bin index of each value within its unit's range."""
        low, width = self.low[units][None, :, None], self.width[units][None, :, None]
        return ((values - low) / width).floor_().long().clamp_(0, BINS - 1)

    def count(self, values: torch.Tensor, units: slice) -> None:
        n = values.shape[1]
        offsets = (torch.arange(n) * BINS)[None, :, None]
        flat = (self._bins(values, units) + offsets).flatten()
        self.counts[units] += torch.bincount(flat, minlength=n * BINS).view(n, BINS)

    def locate(self) -> bool:
        """Find each unit's boundary bin; whether its values fit under the cap."""
        from_top = self.counts.flip(1).cumsum(1)
        top_bin = (from_top >= self.k).long().argmax(1)
        self.boundary = BINS - 1 - top_bin
        above = (
            from_top.gather(1, top_bin[:, None])[:, 0]
            - self.counts.gather(1, self.boundary[:, None])[:, 0]
        )
        self.rank = self.k - above
        held = self.counts.gather(1, self.boundary[:, None])[:, 0]
        return int(held.sum()) <= self.cap

    def collect(self, values: torch.Tensor, units: slice) -> None:
        inside = self._bins(values, units) == self.boundary[units][None, :, None]
        which = inside.nonzero()[:, 1] + (units.start or 0)
        self.kept.append((which, values[inside]))

    def thresholds(self, exact: bool) -> UnitThresholds:
        values = (self.low + self.boundary * self.width).double().numpy()
        if exact and self.kept:
            which = torch.cat([w for w, _ in self.kept])
            kept = torch.cat([v for _, v in self.kept])
            order = torch.argsort(which, stable=True)
            which, kept = which[order], kept[order]
            starts = torch.searchsorted(which, torch.arange(len(self.low) + 1))
            for unit in range(len(self.low)):
                mine = kept[starts[unit] : starts[unit + 1]]
                values[unit] = float(mine.topk(int(self.rank[unit])).values[-1])
        constant = (self.high == self.low).numpy()
        values[constant] = self.low.double().numpy()[constant]
        return UnitThresholds(values, np.full(len(values), exact) | constant, self.k)


def _unit_slices(units: int, batch: int, pixels: int) -> list[slice]:
    """Slices of the units such that one upsampled block holds at most :data:`BLOCK` values."""
    step = max(1, BLOCK // max(1, batch * pixels))
    return [slice(start, min(start + step, units)) for start in range(0, units, step)]


@dataclass(frozen=True)
class Dissection:
    """One layer's dissection.

    Attributes:
        thresholds: Each unit's threshold.
        iou: ``(C, K)`` float64, each unit's IoU with each concept over the data set
            (0 where the union is empty).
        intersection: ``(C, K)`` pixels in both, summed over annotated images.
        union: ``(C, K)`` pixels in either, summed over annotated images.
    """

    thresholds: UnitThresholds
    iou: NDArray[np.float64]
    intersection: NDArray[np.float64]
    union: NDArray[np.float64]

    def labels(self, minimum_iou: float) -> NDArray[np.int64]:
        """``(C,)``: each unit's best concept, or -1 when its IoU is below ``minimum_iou``."""
        best = self.iou.argmax(axis=1)
        reached = self.iou[np.arange(len(best)), best] >= minimum_iou
        return np.where(reached, best, -1)


def _tally(
    batches: Iterable[Batch], thresholds: torch.Tensor, size: tuple[int, int], n_concepts: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    units = len(thresholds)
    inter = np.zeros((units, n_concepts))
    union = np.zeros((units, n_concepts))
    for batch in batches:
        annotated = batch.annotated.float()
        concepts = (batch.concepts.flatten(2) & batch.annotated[..., None]).float()
        concept_area = concepts.sum((0, 2))
        for part in _unit_slices(units, len(annotated), size[0] * size[1]):
            maps = upsampled(batch.activations[:, part], size)
            fires = (maps >= thresholds[part][None, :, None]).float()
            both = torch.einsum("bcp,bkp->ck", fires, concepts)
            unit_area = torch.einsum("bc,bk->ck", fires.sum(2), annotated)
            inter[part] += both.double().numpy()
            union[part] += (unit_area + concept_area[None, :] - both).double().numpy()
    return inter, union


def _passes(
    batches: Callable[[], Iterator[Batch]], units: int, size: tuple[int, int],
    step: Callable[[torch.Tensor, slice], None],
) -> None:  # fmt: skip
    """One pass: ``step`` on every batch's upsampled maps, a block of units at a time."""
    for batch in batches():
        for part in _unit_slices(units, len(batch.activations), size[0] * size[1]):
            step(upsampled(batch.activations[:, part], size), part)


def dissect(
    batches: Callable[[], Iterator[Batch]],
    size: tuple[int, int],
    quantile: float,
    cap: int = CAP,
) -> Dissection:
    """Dissect one layer.

    Args:
        batches: Starts a new pass over the data set (called four times: range,
            histogram, boundary values, tally); every pass yields the same batches.
        size: ``(H, W)`` of the concept masks, which the maps are upsampled to.
        quantile: The top share of each unit's upsampled values that makes its mask.
        cap: Most boundary values kept for the exact threshold.
    """
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    total = 0
    n_concepts = 0
    for batch in batches():
        values = batch.activations.float().flatten(2)
        batch_low, batch_high = values.amin((0, 2)), values.amax((0, 2))
        low = batch_low if low is None else torch.minimum(low, batch_low)
        high = batch_high if high is None else torch.maximum(high, batch_high)
        total += len(values) * size[0] * size[1]
        n_concepts = batch.concepts.shape[1]
    if low is None or high is None:
        raise ValueError("dissect needs at least one batch")
    stream = _Quantile(low, high, max(1, math.ceil(quantile * total)), cap)
    _passes(batches, len(low), size, stream.count)
    exact = stream.locate()
    if exact:
        _passes(batches, len(low), size, stream.collect)
    thresholds = stream.thresholds(exact)
    inter, union = _tally(batches(), torch.from_numpy(thresholds.values).float(), size, n_concepts)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return Dissection(thresholds, iou, inter, union)
