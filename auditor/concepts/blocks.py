"""Bilinear upsampling cut into blocks, for network dissection: which upsampled values
can reach a threshold, and those values, without upsampling every map.

Each output pixel of a bilinear upsampling (no corner alignment, as
``torch.nn.functional.interpolate``) is a convex combination of the four sources around
it; the outputs sharing their four sources make a patch, and within a patch the value is
bilinear in the output's position, so over any rectangle of outputs it lies between the
values at the rectangle's corners. Two levels of bounds, so that the costly one is paid
only where a threshold can be reached:

* a **patch** is bounded by its four sources (:func:`blocks`: cheap, every patch);
* a patch with more than :data:`SPAN` outputs a side is cut into **sub-blocks** of at
  most :data:`SPAN` a side, each bounded by its corner pixels (:func:`refine`: only
  for the patches asked for).

:func:`upsampled` and :func:`block_values` compute a value with the same arithmetic, so
a threshold taken on one and applied to the other agrees bit for bit.

Own code: ``F.interpolate`` has no way to upsample a chosen set of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "BLOCK",
    "Axis",
    "Blocks",
    "Refined",
    "block_values",
    "blocks",
    "geometry",
    "refine",
    "upsampled",
]

BLOCK = 1 << 24
"""Most upsampled values held at once (64 MiB of float32)."""

SPAN = 8
"""Most outputs along each axis of a sub-block: a source's outputs beyond this are cut
into sub-blocks, bounded by the values at their corner pixels (the values of a bilinear
patch lie between those at the corners of any rectangle of it)."""

SLACK = 1e-6
"""Widening of a block's bounds, relative to its largest source (about eight float32
ulps), so that the rounding of a value's four terms never puts it outside them."""


@dataclass(frozen=True)
class Axis:
    """Bilinear geometry along one axis, as ``F.interpolate`` computes it (no corner
    alignment): output ``i`` reads source ``low[i]`` with weight ``w0[i]`` and ``high[i]``
    with ``w1[i]``; the outputs whose ``low`` is source ``j`` are ``start[j]`` to
    ``start[j] + count[j]`` (``low`` never decreases).

    ``patches`` and ``blocks`` (the sub-blocks) are ``(source, first output, size)``, one
    patch per source with outputs; the sub-blocks of patch ``p`` are ``subs[0][p]`` to
    ``subs[0][p] + subs[1][p]``."""

    low: torch.Tensor
    high: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    after: torch.Tensor  # (n_in,) the source after each one (the last repeats)
    blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    patches: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    subs: tuple[torch.Tensor, torch.Tensor]


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
    has = torch.nonzero(count).flatten()
    pieces = torch.bincount(source, minlength=n_in)[has]
    return Axis(
        low, (low + 1).clamp_max(n_in - 1), 1 - w1, w1, start, count,
        (torch.arange(n_in) + 1).clamp_max(n_in - 1), (source, first, size),
        (has, start[has], count[has]), (pieces.cumsum(0) - pieces, pieces),
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
    """One batch's maps cut into patches (``(B, U, nr, nc)`` per patch: the outputs
    sharing their four sources). A patch's values lie between ``low`` and ``high``, its
    sources' least and greatest, widened by :data:`SLACK` (the rounding of a value's
    four terms); a ``flat`` patch's four sources are equal and all its values are that
    source (``low``, exactly); ``pixels`` outputs are in each patch."""

    maps: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    flat: torch.Tensor
    pixels: torch.Tensor


def blocks(activations: torch.Tensor, rows: Axis, cols: Axis) -> Blocks:
    maps = activations.float()
    rs, cs = rows.patches[0], cols.patches[0]
    corners = _corners(maps, rows, cols)
    if len(rs) < maps.shape[2] or len(cs) < maps.shape[3]:  # some source has no output
        corners = tuple(c[:, :, rs][..., cs] for c in corners)
    low = torch.minimum(torch.minimum(corners[0], corners[1]), torch.minimum(*corners[2:]))
    high = torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(*corners[2:]))
    flat = low == high
    slack = _slack(low, high)
    low, high = torch.where(flat, low, low - slack), torch.where(flat, high, high + slack)
    pixels = rows.patches[2][:, None] * cols.patches[2][None, :]
    return Blocks(maps, low, high, flat, pixels.expand_as(low))


def _slack(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return SLACK * torch.maximum(low.abs(), high.abs()) + 1e-30


@dataclass(frozen=True)
class Refined:
    """Sub-blocks of some patches: ``where`` ``(m, 4)`` indices ``b, u, i, j`` of each
    (``i, j`` into the axes' ``blocks``) and its bounds ``low`` and ``high`` ``(m,)``."""

    where: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


def refine(patches: Blocks, where: torch.Tensor, rows: Axis, cols: Axis) -> Refined:
    """The sub-blocks of the (non-flat) patches at ``where`` (``(n, 4)`` indices ``b, u,
    i, j`` into the patches), bounded by their corner pixels where a patch is cut (and
    never beyond the patch's own bounds), by the patch's bounds where it is one
    sub-block."""
    b, u, pi, pj = where.unbind(1)
    nr, nc = rows.subs[1][pi], cols.subs[1][pj]
    owner = torch.repeat_interleave(torch.arange(len(where)), nr * nc)
    offset = torch.arange(len(owner)) - torch.repeat_interleave(
        (nr * nc).cumsum(0) - nr * nc, nr * nc
    )
    si = rows.subs[0][pi][owner] + offset // nc[owner]
    sj = cols.subs[0][pj][owner] + offset % nc[owner]
    low, high = patches.low[b, u, pi, pj][owner], patches.high[b, u, pi, pj][owner]
    found = torch.stack([b[owner], u[owner], si, sj], 1)
    cut = ((nr > 1) | (nc > 1))[owner]
    if bool(cut.any()):
        (_, rf, rn), (_, cf, cn) = rows.blocks, cols.blocks
        i, j = si[cut], sj[cut]
        y = torch.stack([rf[i], rf[i] + rn[i] - 1], 1)
        x = torch.stack([cf[j], cf[j] + cn[j] - 1], 1)
        corners = _values(patches.maps, rows, cols, found[cut], y, x).flatten(1)
        slack = _slack(low[cut], high[cut])  # the patch's, already widened: wider still
        low[cut] = torch.maximum(low[cut], corners.amin(1) - slack)
        high[cut] = torch.minimum(high[cut], corners.amax(1) + slack)
    return Refined(found, low, high)


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
