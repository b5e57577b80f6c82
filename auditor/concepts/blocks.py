"""Bilinear upsampling cut into blocks, for network dissection: which upsampled values
can reach a threshold, and those values, without upsampling every map.

Each output pixel of a bilinear upsampling (no corner alignment, as
``torch.nn.functional.interpolate``) is a convex combination of the four sources around
it; the outputs sharing their four sources make a patch, and within a patch the value is
bilinear in the output's position, so over any rectangle of outputs it lies between the
values at the rectangle's corners. Outputs are cut into blocks (a patch, or a part of at
most :data:`SPAN` outputs a side); a block's bounds come from its sources (cheap) or,
where a source has many outputs, from its corner pixels. :func:`upsampled` and
:func:`block_values` compute a value with the same arithmetic, so a threshold taken on
one and applied to the other agrees bit for bit.

Own code: ``F.interpolate`` has no way to upsample a chosen set of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["BLOCK", "Axis", "Blocks", "block_values", "blocks", "geometry", "upsampled"]

BLOCK = 1 << 24
"""Most upsampled values held at once (64 MiB of float32)."""

SPAN = 8
"""Most outputs along each axis of a block: a source's outputs beyond this are cut into
blocks, bounded by the values at their corner pixels (the values of a bilinear patch lie
between those at the corners of any rectangle of it)."""

SLACK = 1e-6
"""Widening of a block's bounds, relative to its largest source (about eight float32
ulps), so that the rounding of a value's four terms never puts it outside them."""


@dataclass(frozen=True)
class Axis:
    """Bilinear geometry along one axis, as ``F.interpolate`` computes it (no corner
    alignment): output ``i`` reads source ``low[i]`` with weight ``w0[i]`` and ``high[i]``
    with ``w1[i]``; the outputs whose ``low`` is source ``j`` are ``start[j]`` to
    ``start[j] + count[j]`` (``low`` never decreases)."""

    low: torch.Tensor
    high: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    after: torch.Tensor  # (n_in,) the source after each one (the last repeats)
    blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # source, first output, size


def _axis(n_in: int, n_out: int) -> Axis:
    """The geometry, with each source's outputs cut into blocks of at most :data:`SPAN`."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    real = (scale * (torch.arange(n_out, dtype=torch.float32) + 0.5) - 0.5).clamp_min(0)
    low = real.long()
    w1 = real - low.float()
    count = torch.bincount(low, minlength=n_in)
    start = count.cumsum(0) - count
    blocks = [
        (j, int(start[j]) + offset, min(SPAN, int(count[j]) - offset))
        for j in range(n_in)
        for offset in range(0, int(count[j]), SPAN)
    ]
    source, first, size = (
        torch.tensor(column, dtype=torch.long) for column in zip(*blocks, strict=True)
    )
    return Axis(
        low, (low + 1).clamp_max(n_in - 1), 1 - w1, w1, start, count,
        (torch.arange(n_in) + 1).clamp_max(n_in - 1), (source, first, size),
    )  # fmt: skip


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
    """One batch's maps cut into blocks of outputs (``(B, U, nr, nc)`` per block): a block
    lies in one bilinear patch (its outputs share their four sources); its values lie
    between ``low`` and ``high``: its sources' least and greatest, or, where sources
    have many outputs, the least and greatest of its corner pixels, widened by
    :data:`SLACK`. A ``flat`` block's four sources are equal and all its values are that
    source (``low``); ``pixels`` outputs are in each block."""

    maps: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    flat: torch.Tensor
    pixels: torch.Tensor


def blocks(activations: torch.Tensor, rows: Axis, cols: Axis) -> Blocks:
    maps = activations.float()
    (rs, rf, rn), (cs, cf, cn) = rows.blocks, cols.blocks
    corners = _corners(maps, rows, cols)
    whole = torch.equal(rs, torch.arange(maps.shape[2])) and torch.equal(
        cs, torch.arange(maps.shape[3])
    )
    if not whole:  # some source has no output, or more than one block
        corners = tuple(c[:, :, rs][..., cs] for c in corners)
    low = torch.minimum(torch.minimum(corners[0], corners[1]), torch.minimum(*corners[2:]))
    high = torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(*corners[2:]))
    flat = low == high
    slack = SLACK * torch.maximum(low.abs(), high.abs()) + 1e-30  # rounding of 4 terms
    least, most = low, high
    if int(rows.count.max()) > SPAN or int(cols.count.max()) > SPAN:
        y, x = torch.cat([rf, rf + rn - 1]), torch.cat([cf, cf + cn - 1])
        grid = _pixels_at(maps, rows, cols, y, x)
        nr, nc = len(rf), len(cf)
        pixel = [grid[..., a : a + nr, b : b + nc] for a in (0, nr) for b in (0, nc)]
        least = torch.minimum(torch.minimum(pixel[0], pixel[1]), torch.minimum(*pixel[2:]))
        most = torch.maximum(torch.maximum(pixel[0], pixel[1]), torch.maximum(*pixel[2:]))
    low = torch.where(flat, low, least - slack)
    high = torch.where(flat, high, most + slack)
    pixels = rn[:, None] * cn[None, :]
    return Blocks(maps, low, high, flat, pixels.expand_as(low))


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
    """The upsampled values of the blocks at ``where`` (``(n, 4)`` indices ``b, u, i, j``),
    a chunk at a time: ``(where, values, y, x)``, values ``(n, R, S)`` (NaN outside the
    block), output rows ``(n, R)`` and columns ``(n, S)``. Same arithmetic as
    :func:`upsampled`, so the values are equal bit for bit."""
    (rs, rf, rn), (cs, cf, cn) = rows.blocks, cols.blocks
    span_r, span_c = int(rn.max()), int(cn.max())
    step = max(1, BLOCK // (span_r * span_c))
    maps = patches.maps
    for chunk in where.split(step):
        b, u, bi, bj = chunk.unbind(1)
        y = rf[bi][:, None] + torch.arange(span_r)
        x = cf[bj][:, None] + torch.arange(span_c)
        inside_y = y < (rf[bi] + rn[bi])[:, None]
        inside_x = x < (cf[bj] + cn[bj])[:, None]
        y, x = y.clamp_max(len(rows.low) - 1), x.clamp_max(len(cols.low) - 1)
        i, j = rs[bi], cs[bj]
        ia, ja = rows.after[i], cols.after[j]
        c00, c01 = maps[b, u, i, j][:, None], maps[b, u, i, ja][:, None]
        c10, c11 = maps[b, u, ia, j][:, None], maps[b, u, ia, ja][:, None]
        w0x, w1x = cols.w0[x], cols.w1[x]
        top = (w0x * c00 + w1x * c01)[:, None, :]
        bottom = (w0x * c10 + w1x * c11)[:, None, :]
        values = rows.w0[y][:, :, None] * top + rows.w1[y][:, :, None] * bottom
        inside = inside_y[:, :, None] & inside_x[:, None, :]
        yield chunk, values.masked_fill(~inside, math.nan), y, x
