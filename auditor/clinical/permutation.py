"""The permutation test of metadata dependence: the comparisons (a column at a true
class), their statistics with the calls permuted within each true class, and the
step-down min-P adjustment across them.

Own code: the statistic is the range over a column's values, computed for every
comparison from one permutation shared by the columns, which no library's permutation
test batches this way (scipy's ``permutation_test`` takes one statistic at a time and
draws its own permutations per call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from auditor.resample import grouped_sums

__all__ = ["Stratum", "permuted_statistics", "step_down_min_p", "strata_of"]

_CHUNK = 256
"""Permutations drawn at a time (memory: ``_CHUNK`` x images calls)."""


@dataclass(frozen=True)
class Stratum:
    """One column at one true class: its images' group codes and which groups are judged."""

    column: str
    label: str
    inside: NDArray[np.bool_]
    codes: NDArray[np.int64]
    eligible: NDArray[np.bool_]

    def statistic(self, called: NDArray[np.bool_]) -> NDArray[np.float64]:
        """Largest minus smallest positive rate over the judged groups, per row of
        ``called`` (``(R, n)``: the stratum's images' calls, one assignment per row)."""
        groups = self.eligible.shape[0]
        sizes = np.bincount(self.codes, minlength=groups)
        rates = grouped_sums(self.codes, called.astype(np.float64), groups) / np.maximum(sizes, 1)
        judged = rates[:, self.eligible]
        return np.asarray(judged.max(axis=1) - judged.min(axis=1))


def strata_of(column: str, values: pd.Series, labels: pd.Series, minimum: int) -> list[Stratum]:
    """Per true class with two values of ``minimum`` images: the stratum to compare."""
    found = []
    for label in sorted(labels.unique()):
        inside = (labels == label).to_numpy()
        codes, _ = pd.factorize(values[inside], sort=True)
        eligible = np.bincount(codes) >= minimum
        if eligible.sum() >= 2:
            found.append(Stratum(column, str(label), inside, codes.astype(np.int64), eligible))
    return found


def permuted_statistics(
    strata: list[Stratum], called: NDArray[np.bool_], permutations: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:  # fmt: skip
    """``(permutations, len(strata))``: every stratum's statistic with the calls permuted
    within each true class, one permutation shared by every column at that class (so the
    columns' dependence on one another is kept, as the step-down needs)."""
    permuted = np.empty((permutations, len(strata)))
    for label in dict.fromkeys(s.label for s in strata):
        at_label = [i for i, s in enumerate(strata) if s.label == label]
        calls = called[strata[at_label[0]].inside]
        for start in range(0, permutations, _CHUNK):
            rows = min(_CHUNK, permutations - start)
            shuffled = rng.permuted(np.tile(calls, (rows, 1)), axis=1)
            for i in at_label:
                permuted[start : start + rows, i] = strata[i].statistic(shuffled)
    return permuted


def step_down_min_p(
    observed: NDArray[np.float64], permuted: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Permutation p-values, and Westfall and Young's (1993, algorithm 2.8) step-down
    min-P adjusted p-values.

    Each comparison's statistic is turned into its own permutation p-value, in the data
    and in every permutation (the data counted as one of them), so that comparisons whose
    statistics spread differently without a dependence (the range over twenty small
    groups, the difference of two large ones) weigh alike; the maximum of the raw
    statistics (max-T) lets the widest-spread comparison hide a real one. The smallest
    p-value is compared with the permutations' minimum over every comparison, the next
    with their minimum over those not yet rejected, and so on; the adjusted p-values are
    made monotone. The chance of any false finding stays at most the level when the
    comparisons without a dependence are jointly independent of the calls.

    Args:
        observed: ``(H,)`` the statistics.
        permuted: ``(B, H)`` the statistics in each joint permutation.

    Returns:
        ``(H,)`` raw and ``(H,)`` adjusted p-values.
    """
    every = np.vstack([observed[None, :], permuted])  # row 0: the data
    ranked = np.sort(every, axis=0)
    at_least = np.stack(
        [
            len(every) - np.searchsorted(r, e - 1e-12)
            for r, e in zip(ranked.T, every.T, strict=True)
        ],
        axis=1,
    )
    p = at_least / len(every)
    raw, order = p[0], np.argsort(p[0], kind="stable")
    rest_min = np.minimum.accumulate(p[1:, order[::-1]], axis=1)[:, ::-1]
    hits = (rest_min <= raw[order]).sum(axis=0)
    adjusted = np.empty(len(observed))
    adjusted[order] = np.maximum.accumulate((1 + hits) / len(every))
    return raw, adjusted
