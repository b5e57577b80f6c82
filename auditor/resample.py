"""Bootstrap resamples as weights: images, or the groups of a declared column.

Every bootstrap of the audit (accuracy, AUC and the curves' bands, the disparities,
the robustness changes) draws its resamples here, so that declaring a
``patient-column`` makes each of them resample patients instead of images: images of
one patient are not independent, and treating them as if they were makes intervals
too narrow.

A resample is a row of weights, how many times each image is drawn (a multinomial
draw over the images, or over the groups with each image taking its group's count);
statistics are then weighted sums, so no Python loop runs per resample over images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["Resampling", "grouped_sums", "weighted_means"]

CHUNK = 200
"""Resamples drawn at a time: memory stays at ``CHUNK`` x images weights."""


@dataclass(frozen=True)
class Resampling:
    """What one bootstrap resample draws with replacement.

    Attributes:
        column: The declared grouping column, or ``None`` (images are drawn).
        codes: ``(N,)`` the group of each image, or ``None``. An image without a value
            is a group of its own.
        unvalued: Images without a value in ``column``.
        valued: Groups with a value: codes below it are valued groups, codes from it on
            are images without a value.
    """

    column: str | None = None
    codes: NDArray[np.int64] | None = None
    unvalued: int = 0
    valued: int = 0

    @classmethod
    def of(cls, frame: pd.DataFrame, column: str | None) -> Resampling:
        """Resample the rows of ``frame`` by ``column``'s values (images when ``None``)."""
        if column is None:
            return cls()
        values = frame[column].fillna("").astype(str).to_numpy()
        missing = values == ""
        codes = np.empty(values.shape[0], dtype=np.int64)
        present, uniques = pd.factorize(values[~missing], sort=True)
        codes[~missing] = present
        codes[missing] = len(uniques) + np.arange(int(missing.sum()))
        return cls(column, codes, int(missing.sum()), len(uniques))

    @property
    def groups(self) -> int | None:
        """How many groups are drawn from (``None`` when images are)."""
        return None if self.codes is None else int(self.codes.max()) + 1 if self.codes.size else 0

    def subset(self, keep: NDArray[np.bool_]) -> Resampling:
        """The same grouping restricted to the images ``keep`` marks."""
        if self.codes is None:
            return self
        kept = self.codes[keep]
        present = np.unique(kept)  # sorted: valued groups first
        codes = np.searchsorted(present, kept).astype(np.int64)
        valued = int((present < self.valued).sum())
        return Resampling(self.column, codes, int((kept >= self.valued).sum()), valued)

    def weights(self, n: int, rows: int, rng: np.random.Generator) -> NDArray[np.float64]:
        """``(rows, n)``: how often each of the ``n`` images is drawn in each resample."""
        if self.codes is None:
            return rng.multinomial(n, np.full(n, 1 / n), size=rows).astype(np.float64)
        if self.codes.shape[0] != n:
            raise ValueError(f"the grouping covers {self.codes.shape[0]} images, not n={n}")
        k = int(self.codes.max()) + 1
        drawn = rng.multinomial(k, np.full(k, 1 / k), size=rows).astype(np.float64)
        return drawn[:, self.codes]

    def chunks(
        self, n: int, resamples: int, rng: np.random.Generator, chunk: int = CHUNK
    ) -> Iterator[NDArray[np.float64]]:
        """:meth:`weights` for ``resamples`` resamples, ``chunk`` at a time."""
        for start in range(0, resamples, chunk):
            yield self.weights(n, min(chunk, resamples - start), rng)

    @property
    def rate_interval(self) -> str:
        """How a rate's interval is computed: ``"Wilson"``, or ``"bootstrap over <column>"``."""
        return "Wilson" if self.codes is None else f"bootstrap over {self.column}"

    def describe(self) -> str:
        """What is resampled, in words: ``"images"`` or ``"patients (patient_id, 120 groups)"``."""
        if self.codes is None:
            return "images"
        text = f"groups of {self.column} ({self.groups:,} groups"
        if self.unvalued:
            images = "image" if self.unvalued == 1 else "images"
            text += f"; {self.unvalued:,} {images} without a value, each a group of its own"
        return text + ")"


def grouped_sums(
    codes: NDArray[np.int64], weights: NDArray[np.float64], groups: int
) -> NDArray[np.float64]:
    """``(R, groups)``: per resample, the sum of ``weights`` over each group's images.

    Args:
        codes: ``(N,)`` the group of each image, or ``(R, N)`` one assignment per row.
        weights: ``(R, N)`` what each image adds in each row (resample counts, or counts
            times a 0/1 value such as "called positive").
        groups: How many groups (codes lie in ``[0, groups)``).
    """
    rows = weights.shape[0]
    flat = (np.broadcast_to(codes, weights.shape) + (np.arange(rows) * groups)[:, None]).ravel()
    summed = np.bincount(flat, weights.ravel(), rows * groups)
    return np.asarray(summed, dtype=np.float64).reshape(rows, groups)


def weighted_means(
    values: NDArray[np.float64], of: NDArray[np.bool_], resampling: Resampling, resamples: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:  # fmt: skip
    """``(resamples, M)``: the mean of ``values[:, m]`` over the images ``of[:, m]`` marks,
    in every resample (NaN where a resample draws none of them); one matrix product per
    chunk of resamples, all ``M`` means from the same draws (so differences are paired).

    Args:
        values: ``(N, M)`` one column per mean (a 0/1 column makes it a rate).
        of: ``(N, M)`` the images each mean is over.
    """
    numerator = np.where(of, values, 0.0)
    denominator = of.astype(np.float64)
    drawn = []
    for weights in resampling.chunks(of.shape[0], resamples, rng):
        with np.errstate(invalid="ignore", divide="ignore"):
            drawn.append((weights @ numerator) / (weights @ denominator))
    return np.concatenate(drawn)
