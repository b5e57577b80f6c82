"""Segment counterfactuals in the manner of SEDC (Vermeire, Brughmans, Goethals, de
Oliveira and Martens, 2022, "Explainable image classification with evidence
counterfactual", Pattern Analysis and Applications).

The image's superpixels (the SLIC segments LIME weighs) are removed, that is replaced
by a fill (the image blurred, its mean colour, black or white), in a best-first search
for the smallest set whose removal changes the predicted class: every single segment
first, then the set that lowers the predicted class's probability most is grown by
each other segment, and so on, up to ``max_size`` segments or ``max_passes`` forward
passes. Every candidate of a step is scored in one batched forward pass. The set found
is then made irreducible: while putting one of its segments back keeps the new class,
that segment is put back. The counterfactual is re-checked by a fresh forward pass.

Own code: SEDC's reference implementation calls a Keras model one image at a time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["SegmentCounterfactual", "segment_counterfactual"]

FRONTIER = 64
"""Sets kept for expansion: those that lowered the predicted class's probability most."""

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""``(n, C, H, W)`` images in [0, 1] → ``(n, K)`` class probabilities (counts its passes)."""


@dataclass(frozen=True)
class SegmentCounterfactual:
    """The smallest set of segments found whose removal changes the predicted class.

    Attributes:
        segments: The removed segments' labels (``()`` when none was found).
        mask: ``(H, W)`` bool, the removed pixels.
        image: ``(C, H, W)`` the counterfactual image in [0, 1].
        new_class: The class predicted on it (-1 when none was found).
        probability: Its probability.
        irreducible: Whether no segment can be put back without losing the new class.
        passes: Forward passes the search ran (the re-check included).
        valid: Whether a fresh forward pass on ``image`` predicts ``new_class``, not the
            original class.
    """

    segments: tuple[int, ...]
    mask: torch.Tensor
    image: torch.Tensor
    new_class: int
    probability: float
    irreducible: bool
    passes: int
    valid: bool


class _Search:
    """The images of sets of removed segments, scored in batches, with a pass count."""

    def __init__(self, image: torch.Tensor, segments: torch.Tensor, fill: torch.Tensor,
                 score: Scorer, batch: int) -> None:  # fmt: skip
        self.image, self.fill, self.score, self.batch = image, fill, score, batch
        self.one_hot = torch.nn.functional.one_hot(segments.long()).permute(2, 0, 1).float()
        self.passes = 0

    def images(self, sets: torch.Tensor) -> torch.Tensor:
        """``(n, C, H, W)``: the image with each set's segments (``(n, M)`` bool) removed."""
        removed = torch.einsum("nm,mhw->nhw", sets.float(), self.one_hot)[:, None] > 0
        return torch.where(removed, self.fill[None], self.image[None])

    def probabilities(self, sets: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` class probabilities with each set removed, ``batch`` at a time."""
        found = [self.score(self.images(part)) for part in sets.split(self.batch)]
        self.passes += len(sets)
        return torch.cat(found)


def _grown(chosen: torch.Tensor, seen: set[bytes]) -> torch.Tensor:
    """Every set that adds one segment to ``chosen`` and was not scored before."""
    children = chosen[None].repeat(len(chosen), 1)
    children[torch.arange(len(chosen)), torch.arange(len(chosen))] = True
    fresh = [i for i in range(len(chosen)) if not chosen[i]]
    children = children[fresh]
    keep = [i for i, c in enumerate(children) if c.numpy().tobytes() not in seen]
    return children[keep]


def _best_first(
    search: _Search, original: int, max_size: int, max_passes: int
) -> torch.Tensor | None:
    """The first set found (the one lowering the original class's probability most among
    a step's flips), or ``None``."""
    m = search.one_hot.shape[0]
    frontier: list[tuple[float, int, bytes]] = []
    seen: set[bytes] = set()
    candidates = torch.eye(m, dtype=torch.bool)
    tie = 0
    while len(candidates) and search.passes + len(candidates) <= max_passes:
        probabilities = search.probabilities(candidates)
        seen.update(c.numpy().tobytes() for c in candidates)
        flipped = probabilities.argmax(1) != original
        if bool(flipped.any()):
            staying = probabilities[:, original].masked_fill(~flipped, float("inf"))
            return candidates[int(staying.argmin())]
        for c, p in zip(candidates, probabilities[:, original].tolist(), strict=True):
            if int(c.sum()) < max_size:
                heapq.heappush(frontier, (p, tie, c.numpy().tobytes()))
                tie += 1
        frontier = heapq.nsmallest(FRONTIER, frontier)
        heapq.heapify(frontier)
        candidates = torch.zeros(0, m, dtype=torch.bool)
        while frontier and not len(candidates):
            _, _, best = heapq.heappop(frontier)
            chosen = torch.frombuffer(bytearray(best), dtype=torch.bool)
            candidates = _grown(chosen, seen)
    return None


def _irreducible(
    search: _Search, chosen: torch.Tensor, original: int, max_passes: int
) -> tuple[torch.Tensor, bool]:
    """Put segments back while one can be put back and the class stays changed; whether
    the result was checked irreducible within the passes."""
    while int(chosen.sum()) > 1:
        members = torch.nonzero(chosen).flatten()
        if search.passes + len(members) > max_passes:
            return chosen, False
        without = chosen[None].repeat(len(members), 1)
        without[torch.arange(len(members)), members] = False
        probabilities = search.probabilities(without)
        still = probabilities.argmax(1) != original
        if not bool(still.any()):
            return chosen, True
        staying = probabilities[:, original].masked_fill(~still, float("inf"))
        chosen = without[int(staying.argmin())]
    return chosen, True


def segment_counterfactual(
    image: torch.Tensor, segments: torch.Tensor, fill: torch.Tensor, score: Scorer,
    original: int, max_size: int, max_passes: int, batch: int,
) -> SegmentCounterfactual:  # fmt: skip
    """Search the smallest set of ``segments`` (``(H, W)`` labels ``0..M-1``) whose
    replacement by ``fill`` (``(C, H, W)``) changes ``score``'s predicted class from
    ``original``, within ``max_size`` segments and ``max_passes`` forward passes (the
    fresh re-check beyond them)."""
    search = _Search(image, segments, fill, score, batch)
    chosen = _best_first(search, original, max_size, max_passes)
    if chosen is None:
        empty = torch.zeros(image.shape[1:], dtype=torch.bool)
        return SegmentCounterfactual((), empty, image, -1, 0.0, False, search.passes, False)
    chosen, irreducible = _irreducible(search, chosen, original, max_passes)
    counterfactual = search.images(chosen[None])[0]
    checked = score(counterfactual[None])[0]  # a fresh pass, on the image itself
    new_class = int(checked.argmax())
    labels = tuple(int(i) for i in torch.nonzero(chosen).flatten())
    mask = search.one_hot[list(labels)].sum(0) > 0
    return SegmentCounterfactual(
        labels, mask, counterfactual, new_class, float(checked[new_class]), irreducible,
        search.passes + 1, new_class != original,
    )  # fmt: skip
