"""Bilinear upsampling cut into blocks, for network dissection: which upsampled values
can reach a threshold, and those values, without upsampling every map.

Each output pixel of a bilinear upsampling (no corner alignment, as
``torch.nn.functional.interpolate``) is a convex combination of the four sources around
it; the outputs sharing their four sources make a patch, and within a patch the value is
bilinear in the output's position, so over any rectangle of outputs it lies between the
values at the rectangle's corners. Each patch is bounded by its four sources (their
least and greatest: windows of the maps, dense) and cut into **sub-blocks** of at most
:data:`SPAN` outputs a side; where the sub-blocks are large enough (:data:`CORNERED`),
:func:`blocks` bounds every sub-block of a batch at once by the values at its corner
pixels: a few upsampled rows and columns, computed densely, in place of every value.
Only the sub-blocks whose bounds can reach a threshold are then upsampled
(:func:`block_values`).

:func:`upsampled` and :func:`block_values` compute a value with the same arithmetic, so
a threshold taken on one and applied to the other agrees bit for bit.

Own code: ``F.interpolate`` has no way to upsample a chosen set of pixels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "BLOCK",
    "Axis",
    "Blocks",
    "block_values",
    "blocks",
    "fires_everywhere",
    "geometry",
    "rounding_slack",
    "upsampled",
]

BLOCK = 1 << 24
"""Most upsampled values held at once (64 MiB of float32)."""

SPAN = 8
"""Most outputs along each axis of a sub-block: a source's outputs beyond this are cut
into several sub-blocks."""

CORNERED = 16
"""Least mean outputs per sub-block for bounding the sub-blocks by their corner pixels:
their corners are then at most a quarter of the outputs. Smaller sub-blocks keep their
patch's bounds (their corners would be most of the outputs)."""

SLACK = 1e-6
"""Widening of the blocks' bounds, relative to the unit's largest source in the batch
(about eight float32 ulps), so that the rounding of a value's four terms never puts
it outside them."""


@dataclass(frozen=True)
class Axis:
    """Bilinear geometry along one axis, as ``F.interpolate`` computes it (no corner
    alignment): output ``i`` reads source ``low[i]`` with weight ``w0[i]`` and ``high[i]``
    with ``w1[i]``; the outputs whose ``low`` is source ``j`` are ``start[j]`` to
    ``start[j] + count[j]`` (``low`` never decreases).

    ``patches`` and ``blocks`` (the sub-blocks) are ``(source, first output, size)``, one
    patch per source with outputs; ``patch`` is each sub-block's patch."""

    low: torch.Tensor
    high: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    after: torch.Tensor  # (n_in,) the source after each one (the last repeats)
    blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    patches: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    patch: torch.Tensor


def _axis(n_in: int, n_out: int) -> Axis:
    """The geometry, with each source's outputs cut into blocks of at most :data:`SPAN`
    (:func:`_cut`)."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    real = (scale * (torch.arange(n_out, dtype=torch.float32) + 0.5) - 0.5).clamp_min(0)
    low = real.long()
    w1 = real - low.float()
    count = torch.bincount(low, minlength=n_in)
    start = count.cumsum(0) - count
    blocks = [
        (j, int(start[j]) + offset, size)
        for j in range(n_in)
        for offset, size in _cut(int(count[j]))
    ]
    source, first, size = (
        torch.tensor(column, dtype=torch.long) for column in zip(*blocks, strict=True)
    )
    has = torch.nonzero(count).flatten()
    pieces = torch.bincount(source, minlength=n_in)[has]
    return Axis(
        low, (low + 1).clamp_max(n_in - 1), 1 - w1, w1, start, count,
        (torch.arange(n_in) + 1).clamp_max(n_in - 1), (source, first, size),
        (has, start[has], count[has]), torch.repeat_interleave(torch.arange(len(has)), pieces),
    )  # fmt: skip


def _cut(count: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of ``count`` outputs cut into the fewest blocks of at most
    :data:`SPAN`, their sizes as equal as they can be."""
    pieces = -(-count // SPAN)
    sizes = [count // pieces + (i < count % pieces) for i in range(pieces)]
    return list(zip(itertools.accumulate(sizes, initial=0), sizes, strict=False))  # one past


def geometry(source: tuple[int, int], size: tuple[int, int]) -> tuple[Axis, Axis]:
    return _axis(source[0], size[0]), _axis(source[1], size[1])


def _corners(maps: torch.Tensor, rows: Axis, cols: Axis) -> tuple[torch.Tensor, ...]:
    """The four source values of every patch ``(i, j)``: ``(i, j)``, ``(i, j+1)``,
    ``(i+1, j)``, ``(i+1, j+1)`` (clamped at the edges), each shaped as ``maps``."""
    below = maps[..., rows.after, :]
    return maps, maps[..., cols.after], below, below[..., cols.after]


def upsampled(activations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, C, H*W)`` float32: each map bilinearly upsampled to ``size`` (no corner
    alignment, as ``torch.nn.functional.interpolate`` and NetDissect), computed as
    :func:`dissect` computes it pixel by pixel, so a value compares with a threshold
    alike. Where a cell's four sources are equal (a flat patch) the value is that
    source, exactly."""
    rows, cols = geometry((activations.shape[2], activations.shape[3]), size)
    maps = activations.float()
    values = _pixels_at(maps, rows, cols, torch.arange(size[0]), torch.arange(size[1]))
    corners = _corners(maps, rows, cols)
    flat = (corners[0] == corners[1]) & (corners[0] == corners[2]) & (corners[0] == corners[3])
    pick = flat[:, :, rows.low][..., cols.low]
    values = torch.where(pick, maps[:, :, rows.low][..., cols.low], values)
    return values.flatten(2)


@dataclass(frozen=True)
class Blocks:
    """One batch's maps cut into patches (``(B, U, nr, nc)``: the outputs sharing their
    four sources) and sub-blocks (``(B, U, sr, sc)``, the axes' ``blocks``).

    A patch's values lie between ``low`` and ``high``, its sources' least and greatest,
    give or take its unit's ``slack`` (``(U,)``: the rounding of a value's four terms,
    :data:`SLACK`); a ``flat`` patch's four sources are equal and all its values are
    that source (``low``, exactly); ``pixels`` outputs are in each patch. A sub-block's
    values lie between ``sub_low`` and ``sub_high``, give or take the slack: its corner
    pixels' least and greatest, within its patch's bounds; ``sub_flat`` marks the
    sub-blocks of flat patches, ``sub_pixels`` counts outputs. The slack is applied
    where the bounds are compared (:meth:`floors`, :meth:`reach`), not to every bound."""

    maps: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    flat: torch.Tensor
    pixels: torch.Tensor
    sub_low: torch.Tensor
    sub_high: torch.Tensor
    sub_flat: torch.Tensor
    sub_pixels: torch.Tensor
    slack: torch.Tensor

    def floors(self) -> torch.Tensor:
        """``(B, U, sr, sc)``: a lower bound of each sub-block's values."""
        return self.sub_low - self.slack[None, :, None, None]

    def reach(self, floor: torch.Tensor) -> torch.Tensor:
        """``(B, U, sr, sc)`` bool: the sub-blocks of non-flat patches whose values can
        reach ``floor`` (``(U,)``)."""
        return ~self.sub_flat & (self.sub_high >= (floor - self.slack)[None, :, None, None])

    @property
    def held(self) -> int:
        """Patches and sub-blocks held (each counted once where they are the same)."""
        return self.low.numel() + (self.sub_low.numel() if self.sub_low is not self.low else 0)


def blocks(activations: torch.Tensor, rows: Axis, cols: Axis) -> Blocks:
    maps = activations.float()
    padded = F.pad(maps, (0, 1, 0, 1), mode="replicate")  # the last source repeats (``after``)
    low, high = _pairs(torch.minimum, padded), _pairs(torch.maximum, padded)
    rs, cs = rows.patches[0], cols.patches[0]
    if len(rs) < maps.shape[2] or len(cs) < maps.shape[3]:  # some source has no output
        low, high = low[:, :, rs][..., cs], high[:, :, rs][..., cs]
    flat = low == high
    slack = rounding_slack(low.amin((0, 2, 3)), high.amax((0, 2, 3)))
    pixels = rows.patches[2][:, None] * cols.patches[2][None, :]

    def per_sub(t: torch.Tensor) -> torch.Tensor:  # each sub-block's patch's
        if len(rows.patch) == len(rows.patches[0]) and len(cols.patch) == len(cols.patches[0]):
            return t  # one sub-block per patch
        return t.index_select(2, rows.patch).index_select(3, cols.patch)

    sub_low, sub_high, sub_flat = per_sub(low), per_sub(high), per_sub(flat)
    if CORNERED * len(rows.blocks[0]) * len(cols.blocks[0]) <= len(rows.low) * len(cols.low):
        least, most = _corner_range(maps, rows, cols)
        sub_low, sub_high = torch.maximum(sub_low, least), torch.minimum(sub_high, most)
    sub_pixels = rows.blocks[2][:, None] * cols.blocks[2][None, :]
    return Blocks(
        maps, low, high, flat, pixels.expand_as(low), sub_low, sub_high, sub_flat,
        sub_pixels.expand_as(sub_low), slack,
    )  # fmt: skip


def _corner_range(maps: torch.Tensor, rows: Axis, cols: Axis) -> tuple[torch.Tensor, ...]:
    """``(B, U, sr, sc)`` the least and greatest upsampled value at each sub-block's four
    corner pixels: its first and last rows and columns, upsampled densely as products
    with the interpolation matrices, a few units at a time (at most :data:`BLOCK` values
    held). The sums' order is not :func:`upsampled`'s, so a value may differ from it by
    a few ulps: the bounds' slack covers it."""
    (_, rf, rn), (_, cf, cn) = rows.blocks, cols.blocks
    down = _interpolation(rows, torch.stack([rf, rf + rn - 1], 1).flatten())
    across = _interpolation(cols, torch.stack([cf, cf + cn - 1], 1).flatten()).T
    batch, sr, sc = len(maps), len(rf), len(cf)
    step = max(1, BLOCK // max(1, batch * 4 * sr * sc))
    least: list[torch.Tensor] = []
    most: list[torch.Tensor] = []
    for part in maps.split(step, dim=1):
        values = (down @ part @ across).view(batch, -1, sr, 2, sc, 2)
        for pick, into in ((torch.minimum, least), (torch.maximum, most)):
            pairs = pick(values[:, :, :, 0], values[:, :, :, 1])
            into.append(pick(pairs[..., 0], pairs[..., 1]))
    return torch.cat(least, 1), torch.cat(most, 1)


def _interpolation(axis: Axis, outputs: torch.Tensor) -> torch.Tensor:
    """``(len(outputs), n_in)``: the weights that interpolate the sources at ``outputs``."""
    weights = torch.zeros(len(outputs), len(axis.after))
    at = torch.arange(len(outputs))
    weights.index_put_((at, axis.low[outputs]), axis.w0[outputs], accumulate=True)
    return weights.index_put_((at, axis.high[outputs]), axis.w1[outputs], accumulate=True)


def _pairs(pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], padded: torch.Tensor
           ) -> torch.Tensor:  # fmt: skip
    """``pick`` over each 2 x 2 window of ``padded`` (stride 1): one dimension at a time."""
    rows = pick(padded[..., :-1, :], padded[..., 1:, :])
    return pick(rows[..., :-1], rows[..., 1:])


def rounding_slack(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """:data:`SLACK` times the larger magnitude of ``low`` and ``high`` (``low <= high``)."""
    return torch.maximum(high, -low).mul_(SLACK).add_(1e-30)


def fires_everywhere(thresholds: torch.Tensor, low: torch.Tensor, high: torch.Tensor
                     ) -> torch.Tensor:  # fmt: skip
    """``(U,)`` the units whose every upsampled value reaches its threshold, from their
    least and greatest sources: the threshold is at most the least less the slack of
    rounding, or at most 0 when no source is negative (a bilinear value of sources that
    are not negative is not negative)."""
    return (thresholds <= low - rounding_slack(low, high)) | ((thresholds <= 0) & (low >= 0))


def _values(
    maps: torch.Tensor, rows: Axis, cols: Axis, where: torch.Tensor, y: torch.Tensor,
    x: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """``(n, R, S)``: the upsampled values at output rows ``y`` ``(n, R)`` and columns
    ``x`` ``(n, S)`` of the sub-blocks at ``where`` (``(n, 4)``: ``b, u, i, j``), with the
    arithmetic of :func:`upsampled`."""
    b, u, i, j = where.unbind(1)
    si, sj = rows.blocks[0][i], cols.blocks[0][j]
    ia, ja = rows.after[si], cols.after[sj]
    c00, c01 = maps[b, u, si, sj][:, None], maps[b, u, si, ja][:, None]
    c10, c11 = maps[b, u, ia, sj][:, None], maps[b, u, ia, ja][:, None]
    w0x, w1x = cols.w0[x], cols.w1[x]
    top = (w0x * c00 + w1x * c01)[:, None, :]
    bottom = (w0x * c10 + w1x * c11)[:, None, :]
    return rows.w0[y][:, :, None] * top + rows.w1[y][:, :, None] * bottom


def _pixels_at(
    maps: torch.Tensor, rows: Axis, cols: Axis, y: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """The upsampled values at output rows ``y`` and columns ``x`` (every pair), with the
    arithmetic of :func:`upsampled`."""

    def across(t: torch.Tensor) -> torch.Tensor:
        return cols.w0[x] * t[..., cols.low[x]] + cols.w1[x] * t[..., cols.high[x]]

    return rows.w0[y][:, None] * across(maps[:, :, rows.low[y]]) + rows.w1[y][:, None] * across(
        maps[:, :, rows.high[y]]
    )


def block_values(
    patches: Blocks, where: torch.Tensor, rows: Axis, cols: Axis
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The upsampled values of the sub-blocks at ``where`` (``(n, 4)`` indices ``b, u, i,
    j``), a chunk at a time: ``(where, values, y, x)``, values ``(n, R, S)`` (NaN outside
    the sub-block), output rows ``(n, R)`` and columns ``(n, S)``. Same arithmetic as
    :func:`upsampled`, so the values are equal bit for bit."""
    (_, rf, rn), (_, cf, cn) = rows.blocks, cols.blocks
    span_r, span_c = int(rn.max()), int(cn.max())
    step = max(1, BLOCK // (span_r * span_c))
    for chunk in where.split(step):
        bi, bj = chunk[:, 2], chunk[:, 3]
        y = rf[bi][:, None] + torch.arange(span_r)
        x = cf[bj][:, None] + torch.arange(span_c)
        inside_y = y < (rf[bi] + rn[bi])[:, None]
        inside_x = x < (cf[bj] + cn[bj])[:, None]
        y, x = y.clamp_max(len(rows.low) - 1), x.clamp_max(len(cols.low) - 1)
        values = _values(patches.maps, rows, cols, chunk, y, x)
        inside = inside_y[:, :, None] & inside_x[:, None, :]
        yield chunk, values.masked_fill(~inside, math.nan), y, x
