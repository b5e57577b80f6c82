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

Only the values that can reach a threshold are upsampled (see
:mod:`auditor.concepts.blocks`): the blocks' lower bounds give a lower bound of each
unit's threshold (at least ``k`` outputs lie in blocks whose floor reaches it), and only
blocks whose upper bound reaches it are upsampled. The values above the bound are ranked
exactly when at most ``cap`` of them are held; beyond, a per-unit histogram of them, then
the values of the bin holding the threshold (beyond ``cap`` again, the bin's lower edge,
marked approximate). Memory stays bounded by the number of units, not of images: the
caller streams the activations (from disk, see :mod:`auditor.concepts.stage`) once per
pass: range, bound, values (and the boundary bin's, if needed), tally.

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

from auditor.concepts.blocks import BLOCK, Axis, block_values, blocks, geometry, upsampled

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


class _Histogram:
    """Per-unit histogram over each unit's ``[low, high]`` of values with multiplicities."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.low, self.high = low.float(), high.float()
        self.width = ((self.high - self.low) / BINS).clamp(min=1e-30)
        self.counts = torch.zeros(len(low), BINS, dtype=torch.float64)

    def bins(self, units: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        found = ((values - self.low[units]) / self.width[units]).floor_().long()
        return found.clamp_(0, BINS - 1)

    def add(self, units: torch.Tensor, values: torch.Tensor, weights: torch.Tensor) -> None:
        flat = units * BINS + self.bins(units, values)
        self.counts += torch.bincount(
            flat, weights=weights.double(), minlength=len(self.low) * BINS
        ).view(-1, BINS)

    def top_bin(self, k: int) -> torch.Tensor:
        """``(U,)``: each unit's highest bin at which the weight from the top reaches ``k``."""
        from_top = self.counts.flip(1).cumsum(1)
        return BINS - 1 - (from_top >= k).long().argmax(1)


def _bound(
    batches: Callable[[], Iterator[Batch]], grid: tuple[Axis, Axis], low: torch.Tensor,
    high: torch.Tensor, k: int,
) -> torch.Tensor:  # fmt: skip
    """``(U,)`` a lower bound of each unit's threshold, from the sources alone: the least
    patch floor among the patches with the highest floors that hold ``k`` outputs (every
    value of a patch is at least its floor, so at least ``k`` values reach the bound)."""
    histogram = _Histogram(low, high)
    least = torch.full((len(low), BINS), math.inf)
    for batch in batches():
        patches = blocks(batch.activations, *grid)
        units = torch.arange(len(low))[None, :, None, None].expand_as(patches.low)
        keep = patches.pixels > 0
        units, floors = units[keep], patches.low[keep]
        histogram.add(units, floors, patches.pixels[keep])
        index = units * BINS + histogram.bins(units, floors)
        least.view(-1).scatter_reduce_(0, index, floors, "amin")
    return least.gather(1, histogram.top_bin(k)[:, None])[:, 0]


def _scan(
    batches: Callable[[], Iterator[Batch]], grid: tuple[Axis, Axis], floor: torch.Tensor,
    visit: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
) -> None:  # fmt: skip
    """``visit(units, values, weights)`` for every upsampled value at or above its unit's
    ``floor``: a flat patch once, with its pixels as weight; other patches value by value,
    computed only where the patch's greatest source reaches the floor."""
    for batch in batches():
        patches = blocks(batch.activations, *grid)
        reach = floor[None, :, None, None]
        flat = patches.flat & (patches.low >= reach) & (patches.pixels > 0)
        where = flat.nonzero()
        visit(where[:, 1], patches.low[flat], patches.pixels[flat].double())
        open_ = (~patches.flat & (patches.high >= reach)).nonzero()
        for chunk, values, _, _ in block_values(patches, open_, *grid):
            units = chunk[:, 1][:, None, None].expand_as(values)
            keep = values >= floor[units]  # NaN (outside the patch) is never kept
            visit(units[keep], values[keep], torch.ones(int(keep.sum()), dtype=torch.float64))


def _threshold(
    batches: Callable[[], Iterator[Batch]], grid: tuple[Axis, Axis], low: torch.Tensor,
    high: torch.Tensor, k: int, cap: int,
) -> UnitThresholds:  # fmt: skip
    """The ``k``-th largest upsampled value of each unit, from the values above a lower
    bound (:func:`_bound`): ranked directly when they fit under ``cap``; else a histogram
    of them, then the values in the bin that holds the threshold (when those fit)."""
    floor = _bound(batches, grid, low, high, k)
    histogram = _Histogram(floor, high)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    held = [0]

    def first(units: torch.Tensor, found: torch.Tensor, weights: torch.Tensor) -> None:
        histogram.add(units, found, weights)
        if held[0] <= cap:
            kept.append((units.int(), found, weights.float()))
            held[0] += len(found)

    _scan(batches, grid, floor, first)
    constant = (high == low).numpy()
    if held[0] <= cap:
        values = _ranked(kept, torch.full((len(low),), float(k)), len(low))
        exact = ~np.isnan(values)
        values = np.where(exact, values, floor.double().numpy())
    else:
        kept.clear()
        values, exact = _boundary(batches, grid, floor, histogram, k, cap)
    values[constant] = low.double().numpy()[constant]
    return UnitThresholds(values, exact | constant, k)


def _boundary(
    batches: Callable[[], Iterator[Batch]], grid: tuple[Axis, Axis], floor: torch.Tensor,
    histogram: _Histogram, k: int, cap: int,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:  # fmt: skip
    """The thresholds from the histogram's bin that holds each: exact from the bin's
    values when they fit under ``cap``, else the bin's lower edge (marked approximate)."""
    boundary = histogram.top_bin(k)
    above = histogram.counts.flip(1).cumsum(1).gather(1, (BINS - 1 - boundary)[:, None])[:, 0]
    held = histogram.counts.gather(1, boundary[:, None])[:, 0]
    edges = (histogram.low + boundary * histogram.width).double().numpy()
    if int(held.sum()) > cap:
        return edges, np.zeros(len(edges), dtype=bool)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def collect(units: torch.Tensor, found: torch.Tensor, weights: torch.Tensor) -> None:
        inside = histogram.bins(units, found) == boundary[units]
        kept.append((units[inside].int(), found[inside], weights[inside].float()))

    _scan(batches, grid, floor, collect)
    rank = k - (above - held)  # the threshold's rank inside its bin
    values = _ranked(kept, rank, len(edges))
    exact = ~np.isnan(values)
    return np.where(exact, values, edges), exact


def _ranked(
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], rank: torch.Tensor, n: int
) -> NDArray[np.float64]:
    """Each unit's ``rank``-th largest kept value, counting each with its weight; NaN
    where the kept values weigh less than the rank (the bound was wrong: never seen, but
    the threshold is then not taken as exact)."""
    units = torch.cat([u for u, _, _ in kept]).long()
    values = torch.cat([v for _, v, _ in kept]).double()
    weights = torch.cat([w for _, _, w in kept]).double()
    order = torch.argsort(-values, stable=True)  # by value, descending
    order = order[torch.argsort(units[order], stable=True)]  # then by unit
    units, values, weights = units[order], values[order], weights[order]
    starts = torch.searchsorted(units, torch.arange(n + 1))
    result = np.full(n, np.nan)
    for unit in range(n):
        mine = slice(int(starts[unit]), int(starts[unit + 1]))
        reached = torch.nonzero(weights[mine].cumsum(0) >= float(rank[unit]) - 1e-9)
        if len(reached):
            result[unit] = float(values[mine][int(reached[0])])
    return result


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
    batches: Iterable[Batch], grid: tuple[Axis, Axis], thresholds: torch.Tensor,
    n_concepts: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
    """Each unit's intersection and union with each concept, summed over the images
    annotated with it. A unit whose threshold is its least value fires everywhere; a
    flat block reaching the threshold counts whole (its overlap with a concept from the
    concept's summed-area table); other blocks whose bound reaches it, pixel by pixel.
    Everything held at once is bounded by :data:`BLOCK` values."""
    units = len(thresholds)
    inter = torch.zeros(units, n_concepts, dtype=torch.float64)
    union = torch.zeros(units, n_concepts, dtype=torch.float64)
    rows, cols = grid
    pixels = len(rows.low) * len(cols.low)
    step = max(1, BLOCK // (4 * max(1, n_concepts)))
    for batch in batches:
        annotated = batch.annotated.double()
        concepts = batch.concepts & batch.annotated[..., None, None]
        concept_area = concepts.flatten(2).sum(2).double()  # (B, K)
        table = F.pad(concepts.double().cumsum(2).cumsum(3), (1, 0, 1, 0))
        patches = blocks(batch.activations, rows, cols)
        everywhere = thresholds <= patches.low.amin((0, 2, 3))
        inter[everywhere] += concept_area.sum(0)
        area = torch.zeros(len(annotated), units, dtype=torch.float64)
        area[:, everywhere] = float(pixels)
        reach = torch.where(everywhere, math.inf, thresholds)[None, :, None, None]
        flat = (patches.flat & (patches.low >= reach) & (patches.pixels > 0)).nonzero()
        for part in flat.split(step):
            b, u, i, j = part.unbind(1)
            top, left = rows.blocks[1][i], cols.blocks[1][j]
            bottom, right = top + rows.blocks[2][i], left + cols.blocks[2][j]
            overlap = (table[b, :, bottom, right] - table[b, :, top, right]
                       - table[b, :, bottom, left] + table[b, :, top, left])  # fmt: skip
            inter.index_add_(0, u, overlap)
            area.index_put_((b, u), patches.pixels[b, u, i, j].double(), accumulate=True)
        open_ = (~patches.flat & (patches.high >= reach)).nonzero()
        for chunk, values, y, x in block_values(patches, open_, rows, cols):
            fires = (values >= thresholds[chunk[:, 1]][:, None, None]).nonzero()
            for n, r, c in (part.unbind(1) for part in fires.split(step)):
                cb, cu = chunk[n, 0], chunk[n, 1]
                inter.index_add_(0, cu, concepts[cb, :, y[n, r], x[n, c]].double())
                area.index_put_((cb, cu), torch.ones(len(n), dtype=torch.float64), accumulate=True)
        union += area.T @ annotated + concept_area.sum(0)[None, :]
    union -= inter
    return inter.numpy(), union.numpy()


def _finite(
    batches: Callable[[], Iterator[Batch]], bad: torch.Tensor
) -> Callable[[], Iterator[Batch]]:
    """The same batches with the maps of the ``bad`` units (NaN or infinite somewhere)
    set to zero, so that they cannot disturb the others' passes."""
    if not bool(bad.any()):
        return batches

    def start() -> Iterator[Batch]:
        for batch in batches():
            activations = batch.activations.clone()
            activations[:, bad] = 0
            yield Batch(activations, batch.concepts, batch.annotated)

    return start


def dissect(
    batches: Callable[[], Iterator[Batch]],
    size: tuple[int, int],
    quantile: float,
    cap: int = CAP,
) -> Dissection:
    """Dissect one layer. A unit with a NaN or infinite activation anywhere has no
    threshold (NaN, not exact) and no overlap with any concept.

    Args:
        batches: Starts a new pass over the data set (called four or five times: range,
            bound, values, perhaps the boundary bin's, tally); every pass yields the same
            batches.
        size: ``(H, W)`` of the concept masks, which the maps are upsampled to.
        quantile: The top share of each unit's upsampled values that makes its mask.
        cap: Most values held at once for an exact threshold.
    """
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    bad: torch.Tensor | None = None
    total = 0
    n_concepts = 0
    source = (0, 0)
    for batch in batches():
        values = batch.activations.float().flatten(2)
        finite = torch.isfinite(values)
        batch_bad = ~finite.all(2).all(0)
        values = torch.where(finite, values, 0.0)
        batch_low, batch_high = values.amin((0, 2)), values.amax((0, 2))
        low = batch_low if low is None else torch.minimum(low, batch_low)
        high = batch_high if high is None else torch.maximum(high, batch_high)
        bad = batch_bad if bad is None else bad | batch_bad
        total += len(values) * size[0] * size[1]
        n_concepts = batch.concepts.shape[1]
        source = (batch.activations.shape[2], batch.activations.shape[3])
    if low is None or high is None or bad is None:
        raise ValueError("dissect needs at least one batch")
    low, high = torch.where(bad, 0.0, low), torch.where(bad, 0.0, high)
    batches = _finite(batches, bad)
    grid = geometry(source, size)
    thresholds = _threshold(batches, grid, low, high, max(1, math.ceil(quantile * total)), cap)
    values_, exact = thresholds.values.copy(), thresholds.exact.copy()
    values_[bad.numpy()], exact[bad.numpy()] = np.nan, False
    thresholds = UnitThresholds(values_, exact, thresholds.k)
    inter, union = _tally(
        batches(), grid, torch.from_numpy(np.nan_to_num(values_, nan=np.inf)).float(),
        n_concepts,
    )  # fmt: skip
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return Dissection(thresholds, iou, inter, union)
