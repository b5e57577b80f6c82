"""What network dissection counts, once the candidate values are known: the passes over
a layer's batches with their blocks (computed once and kept when they fit), the values
that can reach a threshold, each unit's ``k``-th largest of them, and the intersections
and unions of the units' masks with the concepts.

Two ways to the tally, both exact:

* **Records** (while they fit under a cap): every value at or above its unit's lower
  bound is recorded with its image and its overlap with each concept (a flat patch
  once, with its pixels as weight). The threshold is ranked from the records and the
  tally is read from them: no further pass.
* **A tally pass** otherwise: the blocks that can reach a threshold are upsampled again
  and counted (:func:`tally`).

Own code, as :mod:`auditor.concepts.blocks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from auditor.concepts.blocks import BLOCK, Axis, Blocks, block_values, blocks, fires_everywhere
from auditor.concepts.masks import Batch, bit_counts, patch_overlap

__all__ = [
    "Found",
    "Histogram",
    "Passes",
    "Records",
    "Seen",
    "by_unit_descending",
    "ranked",
    "reaching",
    "scan",
    "tally",
]

BINS = 2048
"""Histogram bins per unit for the streaming quantile."""


@dataclass(frozen=True)
class Seen:
    """A batch as a pass sees it: with its blocks and the index of its first image."""

    batch: Batch
    blocks: Blocks
    first: int


class Passes:
    """Starts a pass over the batches with their blocks. The blocks of the first pass are
    kept for the next ones while they hold at most ``budget`` patches and sub-blocks in
    all (their low and high bounds: 9 bytes each); beyond, every pass computes them
    again."""

    def __init__(
        self, batches: Callable[[], Iterator[Batch]], grid: tuple[Axis, Axis], budget: int = BLOCK
    ) -> None:
        self.batches, self.grid, self.budget = batches, grid, budget
        self.kept: list[Seen] | None = None

    def __call__(self) -> Iterator[Seen]:
        if self.kept is not None:
            yield from self.kept
            return
        kept: list[Seen] | None = []
        held = first = 0
        for batch in self.batches():
            seen = Seen(batch, blocks(batch.activations, *self.grid), first)
            first += len(batch.activations)
            held += seen.blocks.held
            kept = kept if kept is not None and held <= self.budget else None
            if kept is not None:
                kept.append(seen)
            yield seen
        self.kept = kept


@dataclass(frozen=True)
class Found:
    """Values found at or above their units' bounds in one batch, with where they lie:
    patches (``b, i, j``: a flat patch, one value with its pixels as weight) or pixels
    (``b, y, x``: one value each)."""

    seen: Seen
    units: torch.Tensor
    values: torch.Tensor
    weights: torch.Tensor
    where: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    whole_patches: bool


def reaching(patches: Blocks, floor: torch.Tensor) -> torch.Tensor:
    """``(n, 4)`` indices ``b, u, i, j`` of the sub-blocks of non-flat patches whose upper
    bounds reach ``floor`` (per unit)."""
    return patches.reach(floor).nonzero()


def scan(passes: Passes, grid: tuple[Axis, Axis], floor: torch.Tensor) -> Iterator[Found]:
    """Every upsampled value at or above its unit's ``floor``: a flat patch once, other
    patches value by value, computed only in the sub-blocks whose bounds reach the
    floor."""
    rows, cols = grid
    for seen in passes():
        patches = seen.blocks
        flat = (patches.flat & (patches.low >= floor[None, :, None, None])).nonzero()
        b, u, i, j = flat.unbind(1)
        pixels = patches.pixels[b, u, i, j].double()
        yield Found(seen, u, patches.low[b, u, i, j], pixels, (b, i, j), True)
        open_ = reaching(patches, floor)
        for chunk, values, y, x in block_values(patches, open_, rows, cols):
            n, r, c = (values >= floor[chunk[:, 1]][:, None, None]).nonzero().unbind(1)
            ones = torch.ones(len(n), dtype=torch.float64)  # NaN (outside) never reaches
            yield Found(seen, chunk[n, 1], values[n, r, c], ones, (chunk[n, 0], y[n, r], x[n, c]),
                        False)  # fmt: skip


class Histogram:
    """Per-unit histogram over each unit's ``[low, high]`` of values with multiplicities,
    in float64 within float32's range (so that a range wider than float32's largest
    number keeps finite bins and edges)."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor) -> None:
        largest = torch.finfo(torch.float32).max
        self.low = low.double().clamp(-largest, largest)
        self.high = high.double().clamp(-largest, largest)
        self.width = ((self.high - self.low) / BINS).clamp(min=1e-30)
        self.counts = torch.zeros(len(low), BINS, dtype=torch.float64)

    def bins(self, units: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        found = (values.double() - self.low[units]) / self.width[units]
        return found.floor_().clamp_(0, BINS - 1).long()

    def add(self, units: torch.Tensor, values: torch.Tensor, weights: torch.Tensor) -> None:
        flat = units * BINS + self.bins(units, values)
        self.counts += torch.bincount(
            flat, weights=weights.double(), minlength=len(self.low) * BINS
        ).view(-1, BINS)

    def top_bin(self, k: int) -> torch.Tensor:
        """``(U,)``: each unit's highest bin at which the weight from the top reaches ``k``."""
        from_top = self.counts.flip(1).cumsum(1)
        return BINS - 1 - (from_top >= k).long().argmax(1)


def by_unit_descending(units: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The order that sorts by unit, then by value from the largest (float32 values,
    negated: their bits, made to sort as the numbers do, below the unit in one int64
    key)."""
    bits = values.float().neg().view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # sorts as the negated values do
    return torch.argsort((units.long() << 32) + ordered.long() + (1 << 31))


def ranked(
    units: torch.Tensor, values: torch.Tensor, weights: torch.Tensor, rank: torch.Tensor, n: int
) -> NDArray[np.float64]:
    """Each unit's ``rank``-th largest value, counting each with its weight; NaN where the
    values weigh less than the rank (a lower bound was wrong: never seen, but the
    threshold is then not taken as exact)."""
    order = by_unit_descending(units, values)
    units, values = units[order].long(), values[order].double()
    reach = weights[order].double().cumsum(0)  # never decreases: weights are positive
    starts = torch.searchsorted(units, torch.arange(n + 1))
    before = torch.cat([torch.zeros(1, dtype=torch.float64), reach])[starts]
    at = torch.searchsorted(reach, before[:-1] + rank.double() - 1e-9)
    inside = at < starts[1:]
    result = torch.full((n,), math.nan, dtype=torch.float64)
    result[inside] = values[at[inside]]
    return result.numpy()


class Records:
    """The values found at or above the bounds, with their images and overlaps, while
    there are at most ``cap`` of them (then dropped: :attr:`complete` is ``False``, and
    only each unit's values are counted, in :attr:`counts`).

    A pixel's overlap with the concepts is held as its bits (:attr:`Batch.bits`) and
    tallied by counting each unit's bytes. A flat patch's is counted at the tally, and
    only when it fires (most recorded flat patches are a ReLU's zeros, which seldom do),
    from its batch's bits: each batch's are kept (a view of the stage's memory-mapped
    file, not a copy) until then."""

    def __init__(self, grid: tuple[Axis, Axis], cap: int, units: int) -> None:
        self.grid, self.cap, self.held = grid, cap, 0
        self.counts = torch.zeros(units, dtype=torch.long)
        self.pixels: list[tuple[torch.Tensor, ...]] | None = []  # units, values, images, bits
        self.patches: list[tuple[torch.Tensor, ...]] = []  # units, values, weights, b, i, j
        self.bits: dict[int, torch.Tensor] = {}  # each batch's, by its first image
        self.annotated: list[torch.Tensor] = []
        self.concept_area = torch.zeros(0, dtype=torch.float64)
        self._batch = -1
        self._bytes = 0

    @property
    def complete(self) -> bool:
        return self.pixels is not None

    def _start(self, seen: Seen) -> None:
        """Count a batch's annotations and concept areas, once per batch."""
        self._batch = seen.first
        area = seen.batch.areas.sum(0)
        self.concept_area = area if not len(self.concept_area) else self.concept_area + area
        self.annotated.append(seen.batch.annotated)
        self._bytes = seen.batch.bits.shape[-1]
        if self.complete:
            self.bits[seen.first] = seen.batch.bits

    def add(self, found: Found) -> None:
        if found.seen.first != self._batch:
            self._start(found.seen)
        self.held += len(found.values)
        if self.pixels is not None and self.held > self.cap:  # count what was held
            self.counts = torch.bincount(self._joined_units(), minlength=len(self.counts))
            self.pixels, self.patches, self.bits = None, [], {}
        if self.pixels is None:
            self.counts += torch.bincount(found.units, minlength=len(self.counts))
            return
        if not len(found.values):
            return
        b, p, q = found.where
        units, images = found.units.int(), (b + found.seen.first).int()
        if found.whole_patches:
            self.patches.append((units, found.values, found.weights.float(), images, p, q))
        else:
            self.pixels.append((units, found.values, images, found.seen.batch.bits[b, p, q]))

    def columns(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every value held: ``(units, values, weights)``, the patches' weighing their pixels."""
        assert self.pixels is not None, "only complete records are read"
        pixels, patches = self._joined()
        ones = torch.ones(len(pixels[0]))
        return (
            torch.cat([pixels[0], patches[0]]),
            torch.cat([pixels[1], patches[1]]),
            torch.cat([ones, patches[2]]),
        )

    def tally(
        self, thresholds: torch.Tensor, everywhere: torch.Tensor
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Each unit's intersection and union with each concept at ``thresholds``, summed
        over the annotated images (every value reaching a threshold is recorded, since a
        threshold is at least its unit's bound). A unit's area is its whole area less
        what lies in images not annotated with a concept (usually none). The units that
        fire ``everywhere`` are counted from the concepts' areas, not their records."""
        assert self.pixels is not None, "only complete records are tallied"
        n, k = len(thresholds), len(self.concept_area)
        (units, values, images, bits), patches = self._joined()
        fire = (values >= thresholds[units.long()]) & ~everywhere[units.long()]
        units, images, bits = units[fire].long(), images[fire].long(), bits[fire]
        inter = bit_counts(units, bits, n, k)
        weights = torch.ones(len(units), dtype=torch.float64)
        fire = (patches[1] >= thresholds[patches[0].long()]) & ~everywhere[patches[0].long()]
        p_units, _, p_weights, p_images, i, j = (column[fire] for column in patches)
        for first, bits in self.bits.items():
            mine = (p_images >= first) & (p_images < first + len(bits))
            overlap = patch_overlap(bits, self.grid, p_images[mine] - first, i[mine], j[mine], k)
            inter.index_add_(0, p_units[mine].long(), overlap)
        units = torch.cat([units, p_units.long()])
        weights = torch.cat([weights, p_weights.double()])
        images = torch.cat([images, p_images.long()])
        missing = ~torch.cat(self.annotated)
        lacking = missing.any(1)[images]
        outside = weights[lacking, None] * missing[images[lacking]].double()
        area = torch.zeros(n, dtype=torch.float64).index_add_(0, units, weights)[:, None]
        area = area - torch.zeros(n, k, dtype=torch.float64).index_add_(0, units[lacking], outside)
        rows, cols = self.grid
        area[everywhere] = float(len(rows.low) * len(cols.low)) * (~missing).sum(0).double()
        inter[everywhere] = self.concept_area
        union = area + self.concept_area[None, :] - inter
        return inter.numpy(), union.numpy()

    def _joined_units(self) -> torch.Tensor:
        """The units of every value held."""
        parts = [part[0].long() for part in [*(self.pixels or []), *self.patches]]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def _joined(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """The pixels' columns and the patches', each concatenated."""
        assert self.pixels is not None, "only complete records are read"
        ints, floats, at = torch.zeros(0, dtype=torch.int32), torch.zeros(0), torch.zeros(0).long()
        bits = torch.zeros(0, self._bytes, dtype=torch.uint8)
        return (
            _concatenated(self.pixels, (ints, floats, ints, bits)),
            _concatenated(self.patches, (ints, floats, floats, ints, at, at)),
        )


def _concatenated(
    parts: list[tuple[torch.Tensor, ...]], empty: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """The parts' columns, each concatenated (``empty`` when there is no part)."""
    return tuple(torch.cat(column) for column in zip(*parts, strict=True)) if parts else empty


def tally(
    passes: Passes, grid: tuple[Axis, Axis], thresholds: torch.Tensor, n_concepts: int,
    everywhere: torch.Tensor,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
    """As :meth:`Records.tally`, by a pass over the batches, for when the records did
    not fit: a unit fires everywhere in the batches where it does by the batch's own
    range (:func:`~auditor.concepts.blocks.fires_everywhere`), and in all when it fires
    ``everywhere``; a flat patch reaching the threshold counts whole; other sub-blocks
    whose bound reaches it, pixel by pixel. Everything held at once is bounded by
    :data:`BLOCK` values."""
    units = len(thresholds)
    inter = torch.zeros(units, n_concepts, dtype=torch.float64)
    union = torch.zeros(units, n_concepts, dtype=torch.float64)
    rows, cols = grid
    pixels = len(rows.low) * len(cols.low)
    step = max(1, BLOCK // (4 * max(1, n_concepts)))
    for seen in passes():
        batch, patches = seen.batch, seen.blocks
        annotated = batch.annotated.double()
        concept_area = batch.areas  # (B, K)
        least, most = patches.low.amin((0, 2, 3)), patches.high.amax((0, 2, 3))
        here = everywhere | fires_everywhere(thresholds, least, most)  # in this batch
        inter[here] += concept_area.sum(0)
        area = torch.zeros(len(annotated), units, dtype=torch.float64)
        area[:, here] = float(pixels)
        reach = torch.where(here, math.inf, thresholds)[None, :, None, None]
        flat = (patches.flat & (patches.low >= reach)).nonzero()
        for part in flat.split(step):
            b, u, i, j = part.unbind(1)
            inter.index_add_(0, u, patch_overlap(batch.bits, grid, b, i, j, n_concepts))
            area.index_put_((b, u), patches.pixels[b, u, i, j].double(), accumulate=True)
        open_ = reaching(patches, reach[0, :, 0, 0])
        for chunk, values, y, x in block_values(patches, open_, rows, cols):
            fires = (values >= thresholds[chunk[:, 1]][:, None, None]).nonzero()
            for n, r, c in (part.unbind(1) for part in fires.split(step)):
                cb, cu = chunk[n, 0], chunk[n, 1]
                inter += bit_counts(cu, batch.bits[cb, y[n, r], x[n, c]], units, n_concepts)
                area.index_put_((cb, cu), torch.ones(len(n), dtype=torch.float64), accumulate=True)
        union += area.T @ annotated + concept_area.sum(0)[None, :]
    union -= inter
    return inter.numpy(), union.numpy()
