"""A multi-label model's calibration, label by label: is a label's probability the share
of images that have it?

Each label's probability is read against "the image has the label", as a single-label
model's positive class is (:mod:`auditor.clinical.calibration`): the logistic
recalibration (Cox, 1958; slope and intercept with their Wald 95% intervals), the Brier
score, the calibration curve with Wilson intervals, and the expected calibration error
in equal-width bins with its percentile bootstrap 95% interval (the audit's resampling:
patients when ``patient-column`` is set). A label is *miscalibrated* when its slope's
interval excludes 1; each label's slope is its own test, so with many labels some are
found by chance (about one in twenty of the calibrated ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditor.clinical.calibration import (
    PositiveCalibration,
    calibration_of,
    calibration_verdict,
    ece_interval,
)
from auditor.metrics import Estimate
from auditor.multilabel.cases import labels_of
from auditor.resample import Resampling

__all__ = ["LabelCalibration", "label_calibration", "miscalibrated"]


@dataclass(frozen=True)
class LabelCalibration:
    """One label's calibration.

    Attributes:
        label: The label.
        positives: Images that have it.
        ece: Its probability's expected calibration error, with its bootstrap interval.
        fit: The recalibration, Brier score and curve; ``None`` when every image or none
            has the label.
        verdict: ``over-confident``, ``under-confident``, ``consistent`` or ``not
            fitted`` (:func:`~auditor.clinical.calibration.calibration_verdict`).
    """

    label: str
    positives: int
    ece: Estimate
    fit: PositiveCalibration | None
    verdict: str


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
        seed: The audit's seed (label ``k`` draws from ``[seed, 17, k]``).
    """
    truth = [set(labels_of(str(cell))) for cell in predictions["label"]]
    found = []
    for k, name in enumerate(names):
        p = predictions[f"p_{name}"].to_numpy(dtype=np.float64)
        y = np.array([name in t for t in truth], dtype=bool)
        rng = np.random.default_rng([seed, 17, k])
        fit = calibration_of(p, y, name)
        ece = Estimate(*ece_interval(p, y, resampling, resamples, rng))
        found.append(LabelCalibration(name, int(y.sum()), ece, fit, calibration_verdict(fit)))
    return tuple(found)


def miscalibrated(calibrations: tuple[LabelCalibration, ...]) -> tuple[LabelCalibration, ...]:
    """The labels whose calibration slope's interval excludes 1, the farthest from 1
    first (by the slope's log: a slope of 0.5 is as far as one of 2)."""
    found = [c for c in calibrations if c.verdict in ("over-confident", "under-confident")]
    return tuple(sorted(found, key=lambda c: -_distance(c.fit.slope[0] if c.fit else 1.0)))


def _distance(slope: float) -> float:
    """How far a slope is from 1, on the log scale (a slope of 0 or below: infinitely)."""
    return abs(math.log(slope)) if slope > 0 else math.inf
