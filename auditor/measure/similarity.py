"""Comparisons of attribution maps: rank correlation, SSIM, sparseness, and a mean's CI.

Own code over scipy and scikit-image so that many maps compare in one vectorised call;
the definitions are the ones Quantus uses (``correlation_spearman``, ``ssim``,
``Sparseness``), checked against it in ``tests/test_trust_reference.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import rankdata
from skimage.metrics import structural_similarity

from auditor.explain.postprocess import minmax

__all__ = ["gini", "mean_ci", "min_max", "rank_correlation", "ssim"]

Floats = NDArray[np.float64]


def min_max(maps: NDArray[np.floating]) -> Floats:
    """``(N, H, W)`` maps scaled to [0, 1] each, in float64 (the report's display scaling,
    :func:`auditor.explain.postprocess.minmax`)."""
    return minmax(torch.from_numpy(np.asarray(maps, dtype=np.float64))).numpy()


def rank_correlation(a: NDArray[np.floating], b: NDArray[np.floating]) -> Floats:
    """Spearman rank correlation of each pair of maps ``a[i]``, ``b[i]``: ``(N,)``.

    Ties get their average rank (as ``scipy.stats.spearmanr``). Two constant maps
    correlate 1 (they are the same ordering); a constant map against a varying one 0.

    Args:
        a, b: ``(N, ...)`` maps of the same shape.
    """
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    both_constant = ((ra == 0).all(axis=1)) & ((rb == 0).all(axis=1))
    out = np.divide((ra * rb).sum(axis=1), norm, out=np.zeros(len(a)), where=norm > 0)
    out[both_constant] = 1.0
    return out


def ssim(a: NDArray[np.floating], b: NDArray[np.floating]) -> Floats:
    """Structural similarity of each pair of maps after min-max scaling: ``(N,)``.

    scikit-image's ``structural_similarity`` with ``data_range=1`` and its default
    7×7 window (smaller for maps under 7 pixels a side).
    """
    sa, sb = min_max(a), min_max(b)
    side = min(a.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    return np.array(
        [
            structural_similarity(x, y, data_range=1.0, win_size=window)
            for x, y in zip(sa, sb, strict=True)
        ]
    )


def gini(maps: NDArray[np.floating]) -> Floats:
    """Gini index of each map's absolute values (Chalasani et al., 2020): ``(N,)`` in [0, 1].

    0 when every pixel carries the same attribution, near 1 when one pixel carries it
    all. As Quantus's ``Sparseness``, ``1e-7`` is added to every value.
    """
    values = np.sort(np.abs(maps.reshape(len(maps), -1)).astype(np.float64), axis=1) + 1e-7
    n = values.shape[1]
    weights = 2 * np.arange(1, n + 1) - n - 1
    return (values * weights).sum(axis=1) / (n * values.sum(axis=1))


def mean_ci(
    values: NDArray[np.floating], seed: int = 0, resamples: int = 2000
) -> tuple[float, float, float]:
    """Mean of ``values`` (NaNs left out) and its percentile-bootstrap 95% interval.

    Returns:
        ``(mean, low, high)``; all NaN without values, the mean as both ends with one.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"),) * 3
    mean = float(finite.mean())
    if finite.size == 1:
        return mean, mean, mean
    picks = np.random.default_rng(seed).integers(0, finite.size, size=(resamples, finite.size))
    means = finite[picks].mean(axis=1)
    return mean, float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
