"""Calibration of the probability that matters, and of every class one-vs-rest.

* For the positive class: logistic recalibration (Cox, 1958), the fit of
  ``logit P(positive) = intercept + slope * logit(p)`` by maximum likelihood with
  statsmodels (which also gives the coefficients' 95% Wald intervals); a calibrated
  model has slope 1 and intercept 0, a slope under 1 means over-confident probabilities.
  The Brier score (scikit-learn), and the calibration curve in equal-width bins with
  Wilson 95% intervals of each bin's observed share.
* For every class, one-vs-rest: the expected calibration error of ``p_<class>`` against
  "the image is of that class" (:func:`auditor.metrics.calibration_bins`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from numpy.typing import NDArray
from sklearn.metrics import brier_score_loss

from auditor.clinical.rates import wilson_rate
from auditor.metrics import ECE_BINS, equal_width_bin
from auditor.resample import Resampling, grouped_sums

__all__ = [
    "MISCALIBRATED",
    "CurveBin",
    "PositiveCalibration",
    "calibration_of",
    "calibration_verdict",
    "class_ece",
    "ece_interval",
    "ece_intervals",
    "positive_calibration",
]

CURVE_BINS = 10
_CELLS = 4_000_000
"""Probabilities binned at a time by :func:`class_ece` (rows x classes)."""
_EPSILON = 1e-6


@dataclass(frozen=True)
class CurveBin:
    """One bin of the calibration curve: predicted against observed share of positives."""

    lower: float
    upper: float
    n: int
    predicted: float
    observed: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PositiveCalibration:
    """How well the positive class's probability is calibrated.

    Attributes:
        slope, intercept: Of the logistic recalibration, each ``(value, low, high)``
            (Wald, cluster-robust over a declared patient column); NaN when the fit does
            not converge (e.g. perfectly separated data), the probability is one value,
            or the interval is not finite.
        brier: Mean squared difference between probability and outcome.
        curve: The calibration curve's non-empty bins.
    """

    positive_class: str
    slope: tuple[float, float, float]
    intercept: tuple[float, float, float]
    brier: float
    curve: tuple[CurveBin, ...]


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    clipped = np.clip(p, _EPSILON, 1 - _EPSILON)
    return np.asarray(np.log(clipped / (1 - clipped)))


def _recalibration(
    p: NDArray[np.float64], y: NDArray[np.bool_], groups: NDArray[np.int64] | None
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Slope and intercept with their 95% intervals: Wald, cluster-robust by ``groups``
    when given (images of one patient are not independent); NaN without a fit, or
    without a finite interval."""
    nan = (float("nan"),) * 3
    logit = _logit(p)
    if np.ptp(logit) == 0:  # one probability for every image: no slope to fit
        return nan, nan
    design = sm.add_constant(logit, has_constant="add")
    robust = {} if groups is None else {"cov_type": "cluster", "cov_kwds": {"groups": groups}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = sm.Logit(y.astype(float), design).fit(disp=0, **robust)
    except (np.linalg.LinAlgError, sm.tools.sm_exceptions.PerfectSeparationError):
        return nan, nan
    (a, b), ci = fit.params, np.asarray(fit.conf_int(0.05))
    if not fit.mle_retvals.get("converged", False) or not np.isfinite(ci).all():
        return nan, nan
    return (float(b), float(ci[1, 0]), float(ci[1, 1])), (
        float(a),
        float(ci[0, 0]),
        float(ci[0, 1]),
    )


def _curve(p: NDArray[np.float64], y: NDArray[np.bool_]) -> tuple[CurveBin, ...]:
    edges = np.linspace(0, 1, CURVE_BINS + 1)
    which = equal_width_bin(p, CURVE_BINS)
    bins = []
    for b in range(CURVE_BINS):
        members = which == b
        n = int(members.sum())
        if n:
            rate = wilson_rate(int(y[members].sum()), n)
            bins.append(
                CurveBin(
                    float(edges[b]),
                    float(edges[b + 1]),
                    n,
                    float(p[members].mean()),
                    rate.value,
                    rate.ci_low,
                    rate.ci_high,
                )
            )
    return tuple(bins)


def calibration_of(
    p: NDArray[np.float64], y: NDArray[np.bool_], name: str,
    groups: NDArray[np.int64] | None = None,
) -> PositiveCalibration | None:  # fmt: skip
    """The calibration of probabilities ``p`` of ``name`` against outcomes ``y``, or
    ``None`` when ``y`` is all true or all false (nothing to fit). ``groups`` (a patient
    column's codes) makes the recalibration's intervals cluster-robust."""
    if y.all() or not y.any():
        return None
    slope, intercept = _recalibration(p, y, groups)
    return PositiveCalibration(
        positive_class=name,
        slope=slope,
        intercept=intercept,
        brier=float(brier_score_loss(y, p)),
        curve=_curve(p, y),
    )


def positive_calibration(
    predictions: pd.DataFrame, positive_class: str, groups: NDArray[np.int64] | None = None
) -> PositiveCalibration | None:
    """The positive class's calibration, or ``None`` when the data lack either class."""
    p = predictions[f"p_{positive_class}"].to_numpy(dtype=np.float64)
    y = (predictions["label"] == positive_class).to_numpy(dtype=bool)
    return calibration_of(p, y, positive_class, groups)


MISCALIBRATED = ("inverted", "over-confident", "under-confident")
"""The verdicts of a slope whose 95% interval excludes 1."""


def calibration_verdict(calibration: PositiveCalibration | None) -> str:
    """What the calibration slope's 95% interval says: ``inverted`` (below 0: the
    probability falls as the outcome becomes likelier), ``over-confident`` (below 1),
    ``under-confident`` (above 1), ``consistent`` (it holds 1), or ``not fitted`` (no
    fit or no finite interval: one outcome only, one probability, separated data)."""
    if calibration is None or not all(math.isfinite(v) for v in calibration.slope):
        return "not fitted"
    _, low, high = calibration.slope
    if high < 0:
        return "inverted"
    if high < 1:
        return "over-confident"
    return "under-confident" if low > 1 else "consistent"


def class_ece(predictions: pd.DataFrame, classes: tuple[str, ...]) -> tuple[float, ...]:
    """Each class's one-vs-rest expected calibration error, in class order.

    The same equal-width bins as :func:`auditor.metrics.calibration_bins`, counted for
    every class at once (``O(N K)``, no loop over classes: 10,000 classes stay cheap),
    over blocks of rows so that memory stays at about :data:`_CELLS` cells whatever
    ``N x K`` is.
    """
    size = len(classes) * ECE_BINS
    counts = np.zeros(size)
    confidence = np.zeros(size)
    hits = np.zeros(size)
    names = np.asarray(classes, dtype=object)[None, :]
    offsets = ECE_BINS * np.arange(len(classes))[None, :]
    columns = [f"p_{name}" for name in classes]
    step = max(1, _CELLS // len(classes))
    for start in range(0, len(predictions), step):
        block = predictions.iloc[start : start + step]
        probs = block[columns].to_numpy(dtype=np.float32)
        outcome = block["label"].to_numpy()[:, None] == names
        which = equal_width_bin(probs, ECE_BINS)
        cells = (which + offsets).ravel()
        counts += np.bincount(cells, minlength=size)
        confidence += np.bincount(cells, probs.ravel().astype(np.float64), size)
        hits += np.bincount(cells, outcome.ravel().astype(np.float64), size)
    gap = np.abs(hits - confidence).reshape(len(classes), ECE_BINS)  # count x |acc - conf|
    with np.errstate(invalid="ignore", divide="ignore"):
        return tuple(
            float(v) for v in gap.sum(axis=1) / counts.reshape(len(classes), -1).sum(axis=1)
        )


def _weighted_ece(
    bins: NDArray[np.int64], p: NDArray[np.float64], y: NDArray[np.bool_],
    weights: NDArray[np.float64],
) -> NDArray[np.float64]:  # fmt: skip
    """ECE of ``p`` against ``y`` per row of ``weights`` (``bins``: each image's bin)."""
    counts = grouped_sums(bins, weights, ECE_BINS)
    gap = np.abs(
        grouped_sums(bins, weights * y, ECE_BINS) - grouped_sums(bins, weights * p, ECE_BINS)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(gap.sum(axis=1) / counts.sum(axis=1), dtype=np.float64)


def ece_intervals(
    p: NDArray[np.float64], y: NDArray[np.bool_], resampling: Resampling, resamples: int,
    rng: np.random.Generator,
) -> list[tuple[float, float, float]]:  # fmt: skip
    """The ECE of each column of probabilities ``p`` against the same column of outcomes
    ``y`` (``(N, K)``; the equal-width bins of :func:`class_ece`), with a percentile
    bootstrap 95% interval, every column from the same resamples (vectorised: resample
    counts as weights, bins summed by :func:`~auditor.resample.grouped_sums`).

    The ECE is biased upward on few images (noise alone leaves gaps in the bins): read
    its interval as how large the miscalibration could be.
    """
    bins = equal_width_bin(p, ECE_BINS)
    columns = range(p.shape[1])
    once = np.ones((1, p.shape[0]))
    points = [float(_weighted_ece(bins[:, k], p[:, k], y[:, k], once)[0]) for k in columns]
    drawn: list[list[NDArray[np.float64]]] = [[] for _ in columns]
    for w in resampling.chunks(p.shape[0], resamples, rng):
        for k in columns:
            drawn[k].append(_weighted_ece(bins[:, k], p[:, k], y[:, k], w))
    found = []
    for point, column in zip(points, drawn, strict=True):
        low, high = np.nanquantile(np.concatenate(column), [0.025, 0.975])
        found.append((point, float(low), float(high)))
    return found


def ece_interval(
    p: NDArray[np.float64], y: NDArray[np.bool_], resampling: Resampling, resamples: int,
    rng: np.random.Generator,
) -> tuple[float, float, float]:  # fmt: skip
    """The ECE of probabilities ``p`` against outcomes ``y``, with its interval
    (:func:`ece_intervals` of one column)."""
    return ece_intervals(p[:, None], y[:, None], resampling, resamples, rng)[0]
