"""Nearest neighbours by cosine similarity, exact, in blocks of rows: each image's
nearest others, and every pair at or above a similarity.

Own code rather than scikit-learn's ``NearestNeighbors``: one blocked matrix product
gives both the neighbours and the near-duplicate pairs (scikit-learn would need a
``kneighbors`` and a ``radius_neighbors`` pass), and a point's own row is excluded by
its index, so an exact duplicate is found as a neighbour rather than dropped as the
point itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["Neighbours", "cross_pairs", "nearest", "pairs_within", "unit_rows"]

VALUES = 1 << 24
"""Most similarities held at once (64 MiB): rows are compared with every other row in
blocks of ``VALUES // N`` rows."""


def unit_rows(vectors: NDArray[np.floating]) -> torch.Tensor:
    """``(N, D)`` float32 rows scaled to unit length (a zero row stays zero)."""
    rows = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Neighbours:
    """Each point's nearest others.

    Attributes:
        index: ``(N, k)`` the nearest other points, nearest first.
        similarity: ``(N, k)`` their cosine similarities.
    """

    index: NDArray[np.int64]
    similarity: NDArray[np.float32]


def _blocks(vectors: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, similarities)`` of blocks of rows against every row, a row's own
    similarity set to ``-inf``."""
    n = len(vectors)
    step = max(1, VALUES // max(n, 1))
    for start in range(0, n, step):
        block = vectors[start : start + step] @ vectors.T
        rows = torch.arange(start, start + len(block))
        block[rows - start, rows] = -torch.inf  # never one's own neighbour
        yield start, block


def nearest(vectors: torch.Tensor, k: int) -> Neighbours:
    """The ``k`` nearest other rows of each row of unit-length ``vectors`` (fewer when
    there are not ``k`` others)."""
    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return Neighbours(np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32))
    tops = [block.topk(k, dim=1) for _, block in _blocks(vectors)]
    return Neighbours(
        torch.cat([t.indices for t in tops]).numpy(), torch.cat([t.values for t in tops]).numpy()
    )


def pairs_within(
    vectors: torch.Tensor, threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """``(P, 2)`` index pairs ``i < j`` of unit-length ``vectors`` with cosine similarity at
    least ``threshold``, and ``(P,)`` their similarities."""
    pairs, values = [], []
    for start, block in _blocks(vectors):
        i, j = torch.nonzero(block >= threshold).unbind(1)
        later = j > i + start
        pairs.append(torch.stack([i[later] + start, j[later]], 1))
        values.append(block[i[later], j[later]])
    return (
        torch.cat(pairs or [torch.zeros(0, 2, dtype=torch.long)]).numpy(),
        torch.cat(values or [torch.zeros(0)]).numpy(),
    )


def cross_pairs(
    first: torch.Tensor, second: torch.Tensor, threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
    """Pairs ``(i in first, j in second)`` with similarity at least ``threshold``, and
    each row of ``second``'s nearest row of ``first`` with its similarity."""
    pairs, values, best, best_values = [], [], [], []
    step = max(1, VALUES // max(len(first), 1))
    for start in range(0, len(second), step):
        block = second[start : start + step] @ first.T  # (rows of second, first)
        j, i = torch.nonzero(block >= threshold).unbind(1)
        pairs.append(torch.stack([i, j + start], 1))
        values.append(block[j, i])
        top = block.max(dim=1)
        best.append(top.indices)
        best_values.append(top.values)
    return (
        torch.cat(pairs or [torch.zeros(0, 2, dtype=torch.long)]).numpy(),
        torch.cat(values or [torch.zeros(0)]).numpy(),
        torch.cat(best or [torch.zeros(0, dtype=torch.long)]).numpy(),
        torch.cat(best_values or [torch.zeros(0)]).numpy(),
    )
