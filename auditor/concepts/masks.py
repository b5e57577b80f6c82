"""The concept masks as network dissection reads them: each pixel's concepts packed as
bits (a byte per eight concepts), so that a pixel's overlap with every concept is one
gather, and overlaps are tallied by counting bytes.

The stage packs the masks once, when it reads them (:meth:`Batch.of`); every pass over
every layer then reads the packed bits. Own code, as :mod:`auditor.concepts.blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from auditor.concepts.blocks import BLOCK, Axis

__all__ = ["Batch", "bit_counts", "packed_masks", "patch_overlap", "unpacked"]


@dataclass(frozen=True)
class Batch:
    """A batch of one layer's activations and the images' concepts.

    Attributes:
        activations: ``(B, C, h, w)`` float, the layer's output.
        bits: ``(B, H, W, ceil(K / 8))`` uint8, each pixel's concepts at the masks'
            size (:func:`packed_masks`), where the image is annotated with them.
        areas: ``(B, K)`` float64, each concept's pixels in each image (0 where the
            image is not annotated with it).
        annotated: ``(B, K)`` bool, whether each image is annotated with each concept
            (an image without a mask for a concept counts in none of its tallies).
    """

    activations: torch.Tensor
    bits: torch.Tensor
    areas: torch.Tensor
    annotated: torch.Tensor

    def __post_init__(self) -> None:
        if self.bits.dtype != torch.uint8 or self.annotated.dtype != torch.bool:
            raise TypeError("a Batch's bits are uint8 and its annotations bool (see Batch.of)")

    @classmethod
    def of(cls, activations: torch.Tensor, concepts: torch.Tensor, annotated: torch.Tensor
           ) -> Batch:  # fmt: skip
        """From ``(B, K, H, W)`` masks and ``(B, K)`` annotations, any dtype read as bool
        (:func:`packed_masks`)."""
        annotated = annotated.bool()
        return cls(activations, *packed_masks(concepts.bool(), annotated), annotated)

    @property
    def concepts(self) -> int:
        return self.annotated.shape[1]


def packed_masks(
    concepts: torch.Tensor, annotated: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:attr:`Batch.bits` and :attr:`Batch.areas` from ``(B, K, H, W)`` bool masks,
    emptied where an image is not annotated: concept ``c`` at bit ``c % 8`` of byte
    ``c // 8``."""
    masked = concepts & annotated[..., None, None]
    bits = np.packbits(masked.numpy(), axis=1, bitorder="little").transpose(0, 2, 3, 1)
    return torch.from_numpy(np.ascontiguousarray(bits)), masked.flatten(2).sum(2).double()


def unpacked(bits: np.ndarray, concept: int) -> np.ndarray:
    """``(..., H, W)`` bool: one concept's mask from packed ``(..., H, W, bytes)`` bits."""
    return (bits[..., concept // 8] >> (concept % 8) & 1).astype(bool)


_BYTE = (torch.arange(256)[:, None] >> torch.arange(8)) & 1  # a byte's eight bits


def bit_counts(groups: torch.Tensor, bits: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """``(n, k)`` float64: how many of the pixels (``bits``, ``(m, bytes)``) in each of
    ``n`` groups (``groups``, ``(m,)`` long) have each concept, by counting each group's
    bytes."""
    counts = torch.zeros(n, k, dtype=torch.float64)
    for byte in range(bits.shape[1]):
        codes = groups * 256 + bits[:, byte].long()
        found = torch.bincount(codes, minlength=n * 256).view(n, 256).double()
        width = min(8, k - 8 * byte)
        counts[:, 8 * byte : 8 * byte + width] = found @ _BYTE[:, :width].double()
    return counts


def patch_overlap(
    bits: torch.Tensor, grid: tuple[Axis, Axis], b: torch.Tensor, i: torch.Tensor,
    j: torch.Tensor, k: int,
) -> torch.Tensor:  # fmt: skip
    """``(n, k)`` float64: each patch's (``b, i, j``) pixels inside each concept, from its
    pixels' bits, a chunk of patches at a time (at most :data:`BLOCK` bits held)."""
    rows, cols = grid
    span_r, span_c = int(rows.patches[2].max()), int(cols.patches[2].max())
    counts = torch.zeros(len(b), k, dtype=torch.float64)
    step = max(1, BLOCK // (span_r * span_c * 8 * max(1, bits.shape[-1])))
    for first in range(0, len(b), step):
        pb, pi, pj = (t[first : first + step] for t in (b, i, j))
        y = rows.patches[1][pi][:, None] + torch.arange(span_r)
        x = cols.patches[1][pj][:, None] + torch.arange(span_c)
        inside = ((y < (rows.patches[1] + rows.patches[2])[pi][:, None])[:, :, None]
                  & (x < (cols.patches[1] + cols.patches[2])[pj][:, None])[:, None, :])  # fmt: skip
        patch, r, c = inside.nonzero().unbind(1)
        found = _BYTE[bits[pb[patch], y[patch, r], x[patch, c]].long()].flatten(1)[:, :k]
        counts.index_add_(0, patch + first, found.double())
    return counts
