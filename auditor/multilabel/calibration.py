"""A multi-label model's calibration, label by label: is a label's probability the share
of images that have it?

Each label's probability is read against "the image has the label", as a single-label
model's positive class is (:mod:`auditor.clinical.calibration`): the logistic
recalibration (Cox, 1958; slope and intercept with their Wald 95% intervals), the Brier
score, the calibration curve with Wilson intervals, and the expected calibration error
in equal-width bins with its percentile bootstrap 95% interval (the audit's resampling:
patients when ``patient-column`` is set; every label from the same resamples). With a
patient column the slope's interval is cluster-robust over patients, since a patient's
images are not independent. A label is *miscalibrated* when its slope's interval
excludes 1 (*inverted* when it lies below 0); each label's slope is its own test, so
with many labels some are found by chance (about one in twenty of the calibrated ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from auditor.clinical.calibration import (
    MISCALIBRATED,
    PositiveCalibration,
    calibration_of,
    calibration_verdict,
    ece_intervals,
)
from auditor.metrics import Estimate
from auditor.multilabel.evaluation import label_matrix
from auditor.resample import Resampling

__all__ = ["STREAM", "LabelCalibration", "label_calibration", "miscalibrated"]

STREAM = 1_000_017
"""The ECE resamples draw from ``[seed, STREAM]``: beyond any label's index, so no other
analysis's stream (the dependence test's ``[seed, label]``) is the same."""


@dataclass(frozen=True)
class LabelCalibration:
    """One label's calibration.

    Attributes:
        label: The label.
        positives: Images that have it.
        ece: Its probability's expected calibration error, with its bootstrap interval.
        fit: The recalibration, Brier score and curve; ``None`` when every image or none
            has the label.
        verdict: ``inverted``, ``over-confident``, ``under-confident``, ``consistent``
            or ``not fitted`` (:func:`~auditor.clinical.calibration.calibration_verdict`).
        reason: Why it was not fitted, in words ("" when it was).
    """

    label: str
    positives: int
    ece: Estimate
    fit: PositiveCalibration | None
    verdict: str
    reason: str


def _unfitted(p: NDArray[np.float64], y: NDArray[np.bool_]) -> str:
    """Why a label's recalibration has no fit, in words."""
    if not y.any() or y.all():
        return "no image has it" if not y.any() else "every image has it"
    if np.ptp(p) == 0:
        return "its probability is the same on every image"
    if p[y].min() >= p[~y].max() or p[y].max() <= p[~y].min():
        return "its probability separates the images with it from those without"
    return "the fit did not converge"


def label_calibration(
    predictions: pd.DataFrame, names: tuple[str, ...], resampling: Resampling,
    resamples: int, seed: int,
) -> tuple[LabelCalibration, ...]:  # fmt: skip
    """Every label's calibration, in output order.

    Args:
        predictions: A multi-label ``predictions.csv``'s frame: its ``label`` cells and
            each label's probability ``p_<label>``.
        names: The model's labels, in output order.
        resampling: What a bootstrap resample draws.
        resamples: Bootstrap resamples of the ECE's interval.
        seed: The audit's seed (the resamples draw from ``[seed, STREAM]``).
    """
    has = label_matrix(predictions["label"], names)
    p = predictions[[f"p_{name}" for name in names]].to_numpy(dtype=np.float64)
    eces = ece_intervals(p, has, resampling, resamples, np.random.default_rng([seed, STREAM]))
    found = []
    for k, name in enumerate(names):
        fit = calibration_of(p[:, k], has[:, k], name, resampling.codes)
        verdict = calibration_verdict(fit)
        reason = _unfitted(p[:, k], has[:, k]) if verdict == "not fitted" else ""
        found.append(
            LabelCalibration(name, int(has[:, k].sum()), Estimate(*eces[k]), fit, verdict, reason)
        )
    return tuple(found)


def miscalibrated(calibrations: tuple[LabelCalibration, ...]) -> tuple[LabelCalibration, ...]:
    """The labels whose calibration slope's interval excludes 1, the farthest from 1
    first (by the slope's log: a slope of 0.5 is as far as one of 2)."""
    found = [c for c in calibrations if c.verdict in MISCALIBRATED]
    return tuple(sorted(found, key=lambda c: -_distance(c.fit.slope[0] if c.fit else 1.0)))


def _distance(slope: float) -> float:
    """How far a slope is from 1, on the log scale (a slope of 0 or below: infinitely)."""
    return abs(math.log(slope)) if slope > 0 else math.inf
