"""The operating point: the model read as a test for the positive class.

From the probability of the positive class (``p_<positive>`` in ``predictions.csv``):

* ROC curve and AUC (scikit-learn), the AUC with a percentile bootstrap interval over
  images (over patients when a ``patient-column`` is declared); the bootstrap is
  vectorised here (resample counts as weights on the sorted scores, the Mann-Whitney
  form of the AUC), since scikit-learn's ``roc_auc_score`` would be called once per
  resample. The ROC band is the pointwise 2.5-97.5% percentile of the resamples'
  true-positive rate on a grid of false-positive rates.
* A threshold, declared (``threshold``) or chosen on these data for a declared target
  (``target-sensitivity``: the highest threshold that reaches it, so the most specific;
  ``target-specificity``: the lowest that reaches it, so the most sensitive; reported as
  chosen on the audited data, which flatters it); at it, sensitivity, specificity, PPV and
  NPV with Wilson 95% intervals (a bootstrap over patients when they are declared), and
  PPV and NPV at a declared ``prevalence`` of the intended population (Bayes' rule; the
  interval from the ends of the sensitivity and specificity intervals, which bound it
  because both values rise with each).
* Decision-curve analysis (Vickers and Elkin, 2006): net benefit
  ``TP/N - FP/N * pt / (1 - pt)`` against threshold probability ``pt``, with treat-all
  and treat-none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from auditor.clinical.rates import Rate, rates
from auditor.clinical.settings import ClinicalSettings
from auditor.resample import Resampling

__all__ = [
    "FPR_GRID",
    "RECALL_GRID",
    "Operating",
    "auc_interval",
    "bootstrap_curves",
    "class_aucs",
    "net_benefit",
    "operating_point",
    "predictive_values",
    "weighted_curves",
]

FPR_GRID = np.linspace(0.0, 1.0, 101)
"""False-positive rates at which the ROC band is drawn."""

RECALL_GRID = np.linspace(0.0, 1.0, 101)
"""Recalls at which the precision-recall band is drawn."""

DECISION_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)
"""Threshold probabilities of the decision curve."""

_CHUNK = 100


@dataclass(frozen=True)
class Operating:
    """The operating point of the positive class.

    Attributes:
        positive_class: The class a positive call means.
        auc: ROC AUC with its bootstrap 95% interval ``(value, low, high)``.
        threshold: Probability of the positive class at or above which an image is called
            positive.
        chosen_for: ``""`` when declared; else what it was chosen on these data to reach,
            e.g. ``"sensitivity 0.95"``.
        sensitivity, specificity, ppv, npv: At the threshold, on these data.
        prevalence: The declared prevalence of the intended population, or ``None``.
        ppv_at_prevalence, npv_at_prevalence: ``(value, low, high)`` at ``prevalence``.
        roc: ``(fpr, tpr, thresholds)`` of scikit-learn's ``roc_curve``.
        band: ``(low, high)`` true-positive rates on :data:`FPR_GRID`.
        average_precision: Area under the precision-recall curve (scikit-learn's average
            precision) with its bootstrap 95% interval ``(value, low, high)``.
        pr: ``(precision, recall, thresholds)`` of ``precision_recall_curve``.
        pr_band: ``(low, high)`` precisions on :data:`RECALL_GRID`.
        decision: Frame of ``threshold``, ``model``, ``treat_all`` net benefit.
        resamples: Bootstrap resamples behind the intervals.
    """

    positive_class: str
    auc: tuple[float, float, float]
    threshold: float
    chosen_for: str
    sensitivity: Rate
    specificity: Rate
    ppv: Rate
    npv: Rate
    prevalence: float | None
    ppv_at_prevalence: tuple[float, float, float] | None
    npv_at_prevalence: tuple[float, float, float] | None
    roc: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
    band: tuple[NDArray[np.float64], NDArray[np.float64]]
    average_precision: tuple[float, float, float]
    pr: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
    pr_band: tuple[NDArray[np.float64], NDArray[np.float64]]
    decision: pd.DataFrame
    resamples: int


def weighted_curves(
    scores: NDArray[np.float64], positive: NDArray[np.bool_], weights: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """AUC, and TPR/FPR at each distinct score (descending), per row of ``weights``.

    ``weights`` is ``(R, N)``: how many times each image is drawn in each resample.
    """
    values, index = np.unique(-scores, return_inverse=True)  # descending scores
    rows, levels = weights.shape[0], values.shape[0]
    offsets = (np.arange(rows) * levels)[:, None]
    flat = (index[None, :] + offsets).ravel()
    pos = np.bincount(flat, (weights * positive).ravel(), rows * levels).reshape(rows, levels)
    neg = np.bincount(flat, (weights * ~positive).ravel(), rows * levels).reshape(rows, levels)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    # A positive beats every negative of a lower score, and ties count one half.
    negatives_below = n_neg[:, None] - np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (negatives_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        tpr = np.cumsum(pos, axis=1) / n_pos[:, None]
        fpr = np.cumsum(neg, axis=1) / n_neg[:, None]
    return auc, tpr, fpr


def _average_precision(
    tpr: NDArray[np.float64], fpr: NDArray[np.float64], positives: NDArray[np.float64],
    negatives: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
    """Average precision (scikit-learn's step-wise definition) and the precision at each
    distinct score, per row of :func:`weighted_curves`' rates; ``positives`` and
    ``negatives`` are each row's ``(R, 1)`` weighted counts."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = positives * tpr / (positives * tpr + negatives * fpr)
    steps = np.diff(np.concatenate([np.zeros((tpr.shape[0], 1)), tpr], axis=1), axis=1)
    return np.nansum(steps * precision, axis=1), precision


Band = tuple[NDArray[np.float64], NDArray[np.float64]]


def _band(curves: list[NDArray[np.float64]]) -> Band:
    stacked = np.stack(curves)
    return np.nanquantile(stacked, 0.025, axis=0), np.nanquantile(stacked, 0.975, axis=0)


def bootstrap_curves(
    scores: NDArray[np.float64], positive: NDArray[np.bool_], resamples: int,
    seed: int | list[int], resampling: Resampling | None = None,
) -> tuple[tuple[float, float], tuple[float, float], Band, Band]:  # fmt: skip
    """Percentile 95% intervals of the AUC and the average precision, the ROC band on
    :data:`FPR_GRID` and the precision-recall band on :data:`RECALL_GRID`.

    Resamples images with replacement (multinomial counts), or the groups of
    ``resampling``, ``_CHUNK`` at a time.
    """
    rng = np.random.default_rng(seed)
    aucs, aps, roc, pr = [], [], [], []
    for weights in (resampling or Resampling()).chunks(scores.shape[0], resamples, rng, _CHUNK):
        auc, tpr, fpr = weighted_curves(scores, positive, weights)
        ap, precision = _average_precision(
            tpr,
            fpr,
            (weights * positive).sum(axis=1, keepdims=True),
            (weights * ~positive).sum(axis=1, keepdims=True),
        )
        aucs.append(auc)
        for r in np.flatnonzero(np.isfinite(auc)):
            aps.append(ap[r])
            roc.append(np.interp(FPR_GRID, np.r_[0.0, fpr[r]], np.r_[0.0, tpr[r]]))
            pr.append(np.interp(RECALL_GRID, tpr[r], np.nan_to_num(precision[r], nan=1.0)))
    auc_ci = np.nanquantile(np.concatenate(aucs), [0.025, 0.975])
    ap_ci = np.quantile(np.asarray(aps), [0.025, 0.975])
    return (
        (float(auc_ci[0]), float(auc_ci[1])),
        (float(ap_ci[0]), float(ap_ci[1])),
        _band(roc),
        _band(pr),
    )


def auc_interval(
    scores: NDArray[np.float64], positive: NDArray[np.bool_], resampling: Resampling,
    resamples: int, rng: np.random.Generator,
) -> tuple[float, float, float] | None:  # fmt: skip
    """ROC AUC (scikit-learn) with its percentile bootstrap 95% interval, or ``None``
    when the images lack either class."""
    if positive.all() or not positive.any():
        return None
    drawn = np.concatenate(
        [
            weighted_curves(scores, positive, weights)[0]
            for weights in resampling.chunks(scores.shape[0], resamples, rng, _CHUNK)
        ]
    )
    low, high = np.nanquantile(drawn, [0.025, 0.975])
    return float(roc_auc_score(positive, scores)), float(low), float(high)


def class_aucs(
    predictions: pd.DataFrame, classes: tuple[str, ...], resampling: Resampling,
    resamples: int, seed: int,
) -> dict[str, tuple[float, float, float]]:  # fmt: skip
    """Each class's one-vs-rest ROC AUC (``p_<class>`` against "the image is of that
    class") with its bootstrap 95% interval; classes the data lack, or have alone, are
    left out. One resampling stream per class (seeded by the class's position)."""
    labels = predictions["label"].to_numpy()
    found = {}
    for k, name in enumerate(classes):
        scores = predictions[f"p_{name}"].to_numpy(dtype=np.float64)
        rng = np.random.default_rng([seed, 3, k])
        interval = auc_interval(scores, labels == name, resampling, resamples, rng)
        if interval is not None:
            found[name] = interval
    return found


def net_benefit(
    scores: NDArray[np.float64], positive: NDArray[np.bool_], thresholds: NDArray[np.float64]
) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none, per threshold."""
    n = scores.shape[0]
    called = scores[None, :] >= thresholds[:, None]
    tp = (called & positive[None, :]).sum(axis=1) / n
    fp = (called & ~positive[None, :]).sum(axis=1) / n
    odds = thresholds / (1 - thresholds)
    prevalence = positive.mean()
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "model": tp - fp * odds,
            "treat_all": prevalence - (1 - prevalence) * odds,
            "treat_none": np.zeros_like(thresholds),
        }
    )


def predictive_values(
    sensitivity: float, specificity: float, prevalence: float
) -> tuple[float, float]:
    """PPV and NPV of a test of this sensitivity and specificity at ``prevalence``; NaN
    where the test calls nobody positive (PPV) or negative (NPV) at that prevalence, as
    a model that calls every image one class does."""
    true_pos = sensitivity * prevalence
    false_pos = (1 - specificity) * (1 - prevalence)
    true_neg = specificity * (1 - prevalence)
    false_neg = (1 - sensitivity) * prevalence
    return _share(true_pos, true_pos + false_pos), _share(true_neg, true_neg + false_neg)


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


def _threshold(
    fpr: NDArray[np.float64], tpr: NDArray[np.float64], cuts: NDArray[np.float64],
    settings: ClinicalSettings,
) -> tuple[float, str]:  # fmt: skip
    """The declared threshold, or the largest one reaching the declared target."""
    if settings.target_sensitivity is not None:
        reached = np.flatnonzero(tpr >= settings.target_sensitivity)
        return float(min(cuts[reached[0]], 1.0)), f"sensitivity {settings.target_sensitivity:g}"
    if settings.target_specificity is not None:
        reached = np.flatnonzero(1 - fpr >= settings.target_specificity)
        return float(min(cuts[reached[-1]], 1.0)), f"specificity {settings.target_specificity:g}"
    return settings.threshold, ""


def _at_prevalence(
    sensitivity: Rate, specificity: Rate, prevalence: float | None
) -> tuple[tuple[float, float, float] | None, tuple[float, float, float] | None]:
    if prevalence is None:
        return None, None
    value = predictive_values(sensitivity.value, specificity.value, prevalence)
    low = predictive_values(sensitivity.ci_low, specificity.ci_low, prevalence)
    high = predictive_values(sensitivity.ci_high, specificity.ci_high, prevalence)
    ppv, npv = (
        (value[i], float(np.fmin(low[i], high[i])), float(np.fmax(low[i], high[i]))) for i in (0, 1)
    )  # an interval bound where the other is undefined (NaN) is that one
    return ppv, npv


def operating_point(
    predictions: pd.DataFrame,
    positive_class: str,
    settings: ClinicalSettings,
    resamples: int,
    resampling: Resampling | None = None,
    stream: tuple[int, ...] = (),
) -> Operating | None:
    """The operating point, or ``None`` when the data lack either class.

    Args:
        resampling: What a bootstrap resample draws (images by default); with groups,
            the rates at the threshold get bootstrap intervals over them, not Wilson's.
        stream: Where the random draws start after the seed (a multi-label model's
            label: ``(STREAM, label)``; none for a single-label model).
    """
    resampling = resampling or Resampling()
    scores = predictions[f"p_{positive_class}"].to_numpy(dtype=np.float64)
    positive = (predictions["label"] == positive_class).to_numpy(dtype=bool)
    if positive.all() or not positive.any():
        return None
    fpr, tpr, cuts = roc_curve(positive, scores)
    threshold, chosen_for = _threshold(fpr, tpr, cuts, settings)
    called = scores >= threshold
    # Sensitivity, specificity, PPV and NPV: what counts, among which images.
    hits = np.stack([called, ~called, positive, ~positive], axis=1)
    of = np.stack([positive, ~positive, called, ~called], axis=1)
    seed = [settings.seed, *stream]
    sensitivity, specificity, ppv, npv = rates(hits, of, resampling, resamples, [*seed, 1])
    (auc_low, auc_high), ap_ci, band, pr_band = bootstrap_curves(
        scores, positive, resamples, seed if stream else settings.seed, resampling
    )
    ppv_prevalence, npv_prevalence = _at_prevalence(sensitivity, specificity, settings.prevalence)
    return Operating(
        positive_class=positive_class,
        auc=(float(roc_auc_score(positive, scores)), auc_low, auc_high),
        threshold=threshold,
        chosen_for=chosen_for,
        sensitivity=sensitivity,
        specificity=specificity,
        ppv=ppv,
        npv=npv,
        prevalence=settings.prevalence,
        ppv_at_prevalence=ppv_prevalence,
        npv_at_prevalence=npv_prevalence,
        roc=(fpr, tpr, cuts),
        band=band,
        average_precision=(float(average_precision_score(positive, scores)), *ap_ci),
        pr=precision_recall_curve(positive, scores),
        pr_band=pr_band,
        decision=net_benefit(scores, positive, DECISION_THRESHOLDS),
        resamples=resamples,
    )
