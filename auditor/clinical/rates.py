"""Proportions with their 95% intervals: Wilson's over images, or a bootstrap over groups.

A rate over independent images (a sensitivity, a group's positive rate) gets
statsmodels' Wilson score interval. When a ``patient-column`` is declared the images
of one patient are not independent, and the interval is the percentile bootstrap over
patients instead (:class:`~auditor.resample.Resampling`): every rate of one call is
resampled together, one matrix product per chunk of resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from statsmodels.stats.proportion import proportion_confint

from auditor.resample import Resampling, weighted_means

__all__ = ["MAX_UNDRAWN", "Rate", "rates", "resampled_ratios", "wilson_rate"]

MAX_UNDRAWN = 0.05
"""Largest share of resamples that may draw none of a rate's images for its interval."""


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% interval: ``hits`` of ``n``."""

    value: float
    ci_low: float
    ci_high: float
    hits: int
    n: int


def wilson_rate(hits: int, n: int) -> Rate:
    """``hits`` of ``n`` with its Wilson 95% interval (NaN for none)."""
    if n == 0:
        nan = float("nan")
        return Rate(nan, nan, nan, 0, 0)
    low, high = proportion_confint(hits, n, method="wilson")
    return Rate(hits / n, float(low), float(high), hits, n)


def resampled_ratios(
    hits: NDArray[np.bool_], of: NDArray[np.bool_], resampling: Resampling, resamples: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:  # fmt: skip
    """``(resamples, M)``: each rate ``hits[:, m]`` among ``of[:, m]`` in every resample
    (:func:`~auditor.resample.weighted_means` of 0/1 values)."""
    return weighted_means(hits.astype(np.float64), of, resampling, resamples, rng)


def rates(
    hits: NDArray[np.bool_], of: NDArray[np.bool_], resampling: Resampling, resamples: int,
    seed: int | list[int],
) -> list[Rate]:  # fmt: skip
    """Each column's rate (see :func:`resampled_ratios`) with its 95% interval: Wilson's
    when images are independent; when they are not, the percentile bootstrap over
    ``resampling``'s groups, widened to Wilson's where that is wider (with few groups
    the bootstrap alone is too narrow: one patient gives a zero-width interval), and
    NaN (not judged) when more than :data:`MAX_UNDRAWN` of the resamples draw none of
    the rate's images."""
    n = of.sum(axis=0)
    counted = (hits & of).sum(axis=0)
    if resampling.codes is None:
        return [wilson_rate(int(h), int(k)) for h, k in zip(counted, n, strict=True)]
    drawn = resampled_ratios(hits, of, resampling, resamples, np.random.default_rng(seed))
    result = []
    for m, (h, k) in enumerate(zip(counted, n, strict=True)):
        finite = drawn[:, m][np.isfinite(drawn[:, m])]
        if k == 0:
            result.append(wilson_rate(0, 0))
            continue
        if finite.size < (1 - MAX_UNDRAWN) * drawn.shape[0]:
            nan = float("nan")  # too few groups hold these images to resample them
            result.append(Rate(float(h / k), nan, nan, int(h), int(k)))
            continue
        low, high = np.quantile(finite, [0.025, 0.975])
        wilson = wilson_rate(int(h), int(k))
        low, high = min(low, wilson.ci_low), max(high, wilson.ci_high)
        result.append(Rate(float(h / k), float(low), float(high), int(h), int(k)))
    return result
