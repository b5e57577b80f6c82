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
blocks whose upper bound reaches it are upsampled. The units are read in groups small
enough for their values above the bound to be held (at most ``cap``; a group whose
values overflow is scanned again in subsets, sized by the counts of the scan that
overflowed), and those values are ranked exactly and tallied from what was held. A
single unit whose values do not fit gets a histogram of them, then the values of the
bin holding the threshold (beyond ``cap`` again, the bin's lower edge, marked
approximate) and a tally pass. Memory stays bounded, whatever the number of images:
the caller streams the activations (from disk, see :mod:`auditor.concepts.stage`) once
per pass: the range, then for each group its bound, its scan and, when its values
overflow, a scan per subset (the blocks of the bound kept for the others when they
fit: then the group is read once). The records keep each batch's concept bits until
the tally (:class:`~auditor.concepts.tally.Records`): the stage's are views of a
memory-mapped file, an eighth of a byte per pixel and concept.

Own code: NetDissect and NetDissect-Lite read layers through module hooks, which a
TorchScript file does not have; the activations come from the tap layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from numpy.typing import NDArray

from auditor.concepts.blocks import BLOCK, Axis, fires_everywhere, geometry, upsampled
from auditor.concepts.masks import Batch
from auditor.concepts.tally import (
    BINS,
    Histogram,
    Passes,
    Records,
    ranked,
    scan,
    tally,
)

__all__ = [
    "Batch",
    "Dissection",
    "UnitThresholds",
    "dissect",
    "upsampled",
]

CAP = 1 << 23
"""Most values recorded at once, over all units, for the exact quantile and the tally
(a pixel's with its unit and image, 12 bytes, and its concepts, a bit each; a flat
patch's also with its weight and place)."""


@dataclass(frozen=True)
class UnitThresholds:
    """Each unit's threshold: the ``k``-th largest upsampled value over the data set.

    Attributes:
        values: ``(C,)`` float64.
        exact: ``(C,)`` bool; ``False`` where the boundary bin held more than the cap
            and its lower edge was used, and for a unit with no threshold (NaN).
        k: The rank of the threshold from the top, ``ceil(quantile × values per unit)``,
            the quantile taken as its decimal (0.07 of 100 values is 7, not 8).
    """

    values: NDArray[np.float64]
    exact: NDArray[np.bool_]
    k: int


def _bound(passes: Passes, low: torch.Tensor, high: torch.Tensor, k: int) -> torch.Tensor:
    """``(U,)`` a lower bound of each unit's threshold: at least ``k`` outputs lie in
    sub-blocks whose floor reaches it."""
    if len(low) * k <= BLOCK:
        return _highest_blocks(passes, len(low), k)
    return _histogram_bound(_floors(passes), low, high, k)


def _floors(passes: Passes) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(units, floors, pixels)`` of every sub-block."""
    for seen in passes():
        patches = seen.blocks
        units = torch.arange(patches.sub_low.shape[1])[None, :, None, None]
        yield (
            units.expand_as(patches.sub_low).flatten(),
            patches.floors().flatten(),
            patches.sub_pixels.flatten(),
        )


def _highest_blocks(passes: Passes, units: int, k: int) -> torch.Tensor:
    """The bound from each unit's highest sub-block floors (dense): as many as make ``k``
    outputs even when each holds the fewest a sub-block holds, less the largest slack
    of the batches. A sub-block's pixels depend on its place in the map only, so they
    are read from the map's."""
    rows, cols = passes.grid
    per_map = (rows.blocks[2][:, None] * cols.blocks[2][None, :]).flatten()
    enough = -(-k // max(1, int(per_map.min())))
    floors = torch.full((units, 1), -math.inf)  # with no pixel: never reaches k
    pixels = torch.zeros(units, 1, dtype=torch.long)
    slack = torch.zeros(units)
    for seen in passes():
        slack = torch.maximum(slack, seen.blocks.slack)
        width = floors.shape[1]
        floors = torch.cat([floors, seen.blocks.sub_low.transpose(0, 1).reshape(units, -1)], 1)
        top = floors.topk(min(enough, floors.shape[1]), dim=1)  # sorted, descending
        new = per_map[(top.indices - width).clamp_min(0) % len(per_map)]  # (b, i, j) order
        old = pixels.gather(1, top.indices.clamp_max(width - 1))
        floors, pixels = top.values, torch.where(top.indices < width, old, new)
    reached = (pixels.cumsum(1) >= k).long().argmax(1)
    return floors.gather(1, reached[:, None])[:, 0] - slack


def _histogram_bound(
    found: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], low: torch.Tensor,
    high: torch.Tensor, k: int,
) -> torch.Tensor:  # fmt: skip
    """The least floor in the histogram bin of floors whose weight from the top reaches
    ``k`` (``-inf`` where none does)."""
    histogram = Histogram(low, high)
    least = torch.full((len(low), BINS), math.inf)
    for units, floors, pixels in found:
        histogram.add(units, floors, pixels)
        index = units * BINS + histogram.bins(units, floors)
        least.view(-1).scatter_reduce_(0, index, floors, "amin")
    reached = histogram.counts.sum(1) >= k
    bound = least.gather(1, histogram.top_bin(k)[:, None])[:, 0]
    return torch.where(reached, bound, -math.inf)


def _measured(
    passes: Passes, grid: tuple[Axis, Axis], low: torch.Tensor, high: torch.Tensor, k: int,
    cap: int, n_concepts: int, bad: torch.Tensor,
) -> tuple[UnitThresholds, NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
    """Each unit's threshold (the ``k``-th largest upsampled value) and its intersections
    and unions with the concepts, from the values above a lower bound (:func:`_bound`):
    scanned all at once, or when their values overflow the records, a few units at a
    time (:func:`_subsets`). The ``bad`` units get no threshold and fire nowhere."""
    floor = _bound(passes, low, high, k)
    whole = _scanned(passes, grid, floor, low, high, k, cap, n_concepts, bad, len(low) > 1)
    if not isinstance(whole, torch.Tensor):
        return whole
    parts = []
    for units in _subsets(whole, cap):
        alone = torch.full_like(floor, math.inf)  # the other units reach nothing
        alone[units] = floor[units]
        found = _scanned(passes, grid, alone, low, high, k, cap, n_concepts, bad, False)
        assert not isinstance(found, torch.Tensor), "a scan that may not give up does not"
        thresholds, inter, union = found
        kept = UnitThresholds(thresholds.values[units], thresholds.exact[units], k)
        parts.append((kept, inter[units], union[units]))
    return _joined(parts, k)


def _joined(
    parts: list[tuple[UnitThresholds, NDArray[np.float64], NDArray[np.float64]]], k: int
) -> tuple[UnitThresholds, NDArray[np.float64], NDArray[np.float64]]:
    """The units of consecutive parts, one after another."""
    thresholds = UnitThresholds(
        np.concatenate([part[0].values for part in parts]),
        np.concatenate([part[0].exact for part in parts]),
        k,
    )
    return thresholds, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _subsets(counts: torch.Tensor, cap: int) -> list[slice]:
    """The units scanned together: as many as have at most ``cap`` values at or above
    their floors (``counts``, counted by the scan that overflowed), so that their
    records fit; a unit alone may not."""
    subsets, first, held = [], 0, 0
    for unit, count in enumerate(counts.tolist()):
        if unit > first and held + count > cap:
            subsets.append(slice(first, unit))
            first, held = unit, 0
        held += count
    return [*subsets, slice(first, len(counts))]


def _scanned(
    passes: Passes, grid: tuple[Axis, Axis], floor: torch.Tensor, low: torch.Tensor,
    high: torch.Tensor, k: int, cap: int, n_concepts: int, bad: torch.Tensor, give_up: bool,
) -> tuple[UnitThresholds, NDArray[np.float64], NDArray[np.float64]] | torch.Tensor:  # fmt: skip
    """:func:`_measured` for the units whose ``floor`` is finite: ranked and tallied from
    their records when they fit under ``cap``; else, when it may ``give_up``, each
    unit's values at or above its floor, counted to the end of the scan; else a
    histogram of the values (kept from the start), those in the bin that holds the
    threshold (when they fit), and a tally pass."""
    histogram = None if give_up else Histogram(floor, high)
    records = Records(grid, cap, len(floor))
    for found in scan(passes, grid, floor):
        if histogram is not None:
            histogram.add(found.units, found.values, found.weights)
        records.add(found)
    if give_up and not records.complete:
        return records.counts
    flat = high == low  # the threshold is that value: nothing to rank
    if records.complete:
        units, recorded, weights = records.columns()
        values = ranked(units, recorded, weights, torch.full((len(floor),), k), len(floor))
        exact = ~np.isnan(values)  # NaN: the records weigh less than k (never seen)
    else:
        assert histogram is not None, "a scan that may not give up keeps its histogram"
        again = ((f.units, f.values, f.weights) for f in scan(passes, grid, floor))
        values, exact = _boundary(histogram, k, cap, flat, again)
    constant = flat.numpy()
    values[constant] = low.double().numpy()[constant]
    values[bad.numpy()], exact[bad.numpy()] = np.nan, False
    at = torch.from_numpy(np.nan_to_num(values, nan=np.inf)).float()
    everywhere = fires_everywhere(at, low, high)
    if records.complete:
        inter, union = records.tally(at, everywhere)
    else:
        inter, union = tally(passes, grid, at, n_concepts, everywhere)
    return UnitThresholds(values, exact | (constant & ~bad.numpy()), k), inter, union


def _boundary(
    histogram: Histogram, k: int, cap: int, skip: torch.Tensor,
    found: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:  # fmt: skip
    """The thresholds from the histogram's bin that holds each: exact from the bin's
    values among the ``found`` ones (units, values, weights: a pass) when they fit
    under ``cap``, else the bin's lower edge (marked approximate). The ``skip`` units
    are not ranked."""
    boundary = histogram.top_bin(k)
    above = histogram.counts.flip(1).cumsum(1).gather(1, (BINS - 1 - boundary)[:, None])[:, 0]
    held = torch.where(skip, 0.0, histogram.counts.gather(1, boundary[:, None])[:, 0])
    edges = (histogram.low + boundary * histogram.width).double().numpy()
    if int(held.sum()) > cap:
        return edges, np.zeros(len(edges), dtype=bool)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for units, found_values, weights in found:
        units = units.long()
        inside = (histogram.bins(units, found_values) == boundary[units]) & ~skip[units]
        kept.append((units[inside], found_values[inside], weights[inside]))
    rank = k - (above - held)  # the threshold's rank inside its bin
    columns = [torch.cat(column) for column in zip(*kept, strict=True)]
    values = ranked(columns[0], columns[1], columns[2], rank, len(edges))
    exact = ~np.isnan(values)
    return np.where(exact, values, edges), exact


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


def _filled(batches: Callable[[], Iterator[Batch]]) -> Callable[[], Iterator[Batch]]:
    """The same batches, less those without an image."""
    return lambda: (batch for batch in batches() if len(batch.activations))


def _units(
    batches: Callable[[], Iterator[Batch]], units: slice, bad: torch.Tensor
) -> Callable[[], Iterator[Batch]]:
    """The same batches with the maps of ``units`` only, those of the ``bad`` units (NaN
    or infinite somewhere) set to zero, so that they cannot disturb the others' passes."""
    zero = bad[units]

    def start() -> Iterator[Batch]:
        for batch in batches():
            activations = batch.activations[:, units]
            if bool(zero.any()):
                activations = activations.clone()
                activations[:, zero] = 0
            yield Batch(activations, batch.bits, batch.areas, batch.annotated)

    return start


def _groups(n: int, k: int, cap: int) -> list[slice]:
    """The units read together: as many as leave room in the records for ``4 k`` values
    each (1.7 to 4.2 ``k`` were found above their bounds in ResNet-18's layers with
    random weights, up to about 30 ``k`` in maps of noise; a group whose values
    overflow is scanned again in subsets), so that their values are ranked from the
    records, however many images there are (one unit at least)."""
    size = max(1, cap // (4 * k))
    return [slice(first, min(first + size, n)) for first in range(0, n, size)]


@dataclass(frozen=True)
class _Range:
    """A layer's first pass: each unit's least and greatest activation (0 for the
    ``bad`` units, NaN or infinite somewhere), the values per unit after upsampling,
    the number of concepts and the maps' size."""

    low: torch.Tensor
    high: torch.Tensor
    bad: torch.Tensor
    total: int
    concepts: int
    source: tuple[int, int]


def _range(batches: Callable[[], Iterator[Batch]], size: tuple[int, int]) -> _Range:
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    bad: torch.Tensor | None = None
    total = concepts = 0
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
        concepts = batch.concepts
        source = (batch.activations.shape[2], batch.activations.shape[3])
    if low is None or high is None or bad is None:
        raise ValueError("dissect needs at least one batch")
    low, high = torch.where(bad, 0.0, low), torch.where(bad, 0.0, high)
    return _Range(low, high, bad, total, concepts, source)


def dissect(
    batches: Callable[[], Iterator[Batch]],
    size: tuple[int, int],
    quantile: float,
    cap: int = CAP,
) -> Dissection:
    """Dissect one layer. A unit with a NaN or infinite activation anywhere has no
    threshold (NaN, not exact) and no overlap with any concept.

    Args:
        batches: Starts a new pass over the data set: once for the range, then once
            for each group of units (:func:`_groups`) when its blocks fit in memory
            (kept for its scans); else once for its bound, its scan and, when its
            values overflow the records, a scan per subset (for a single unit that
            overflows, the boundary bin's and a tally). Every pass yields the same
            batches.
        size: ``(H, W)`` of the concept masks, which the maps are upsampled to.
        quantile: The top share of each unit's upsampled values that makes its mask.
        cap: Most values recorded at once for an exact threshold and a tally
            without another pass.
    """
    batches = _filled(batches)
    found = _range(batches, size)
    grid = geometry(found.source, size)
    written = Fraction(str(float(quantile)))  # as written: 0.07 of 100 values is 7
    k = max(1, math.ceil(written * found.total))
    parts = []
    for units in _groups(len(found.low), k, cap):
        passes = Passes(_units(batches, units, found.bad), grid, BLOCK)
        low, high, bad = found.low[units], found.high[units], found.bad[units]
        parts.append(_measured(passes, grid, low, high, k, cap, found.concepts, bad))
    thresholds, inter, union = _joined(parts, k)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return Dissection(thresholds, iou, inter, union)
