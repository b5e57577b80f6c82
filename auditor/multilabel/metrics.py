"""A multi-label model's metrics: each label as its own binary test, and the image's
whole set of labels.

scikit-learn computes the point estimates (recall, precision, F1, subset accuracy,
Hamming loss, ROC AUC); the 95% intervals come from the audit's seeded bootstrap
(:mod:`auditor.resample`, so a ``patient-column`` resamples patients): the rates as
weighted means, the AUCs as weighted ROC curves (:func:`auditor.clinical.operating.
weighted_curves`), every label's AUC and the macro AUC from the same draws.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn import metrics as skm

from auditor.clinical.operating import weighted_curves
from auditor.errors import ConfigError
from auditor.metrics import Estimate
from auditor.resample import Resampling, weighted_means

__all__ = ["LabelMetrics", "LabelRow", "called", "compute_label_metrics", "label_thresholds"]

_MICRO_CELLS = 4_000_000
"""Weights held at once for the micro AUC's resamples (images x labels x resamples)."""


@dataclass(frozen=True)
class LabelRow:
    """One label read as a binary test at its threshold.

    Attributes:
        name: The label.
        threshold: Probability at or above which an image is called positive for it.
        positives: Images that have the label.
        called: Images called positive for it.
        sensitivity: Share of its images called positive (NaN when none has it).
        specificity: Share of the other images called negative (NaN when all have it).
        precision: Share of the images called positive that have it (NaN: none called).
        f1: Harmonic mean of sensitivity and precision.
        auc: ROC AUC of its probability, or ``None`` when every image or none has it.
        best_threshold: The threshold that maximises sensitivity + specificity on these
            images (Youden's J; chosen on the audited data, so optimistic), or ``None``.
    """

    name: str
    threshold: float
    positives: int
    called: int
    sensitivity: Estimate
    specificity: Estimate
    precision: float
    f1: float
    auc: Estimate | None
    best_threshold: float | None


@dataclass(frozen=True)
class LabelMetrics:
    """Per-label and whole-set metrics of a multi-label evaluation.

    Attributes:
        n_images: Images evaluated.
        labels: One row per label, in output order.
        subset_accuracy: Share of images whose called set equals their labels exactly.
        hamming_loss: Share of (image, label) calls that are wrong.
        macro_auc: Mean of the labels' AUCs (labels with an AUC), or ``None``.
        micro_auc: AUC of every (image, label) probability pooled, or ``None``.
        mean_labels: Labels per image, on average.
        mean_called: Labels called per image, on average.
        resampled: What a bootstrap resample draws, in words.
    """

    n_images: int
    labels: tuple[LabelRow, ...]
    subset_accuracy: Estimate
    hamming_loss: Estimate
    macro_auc: Estimate | None
    micro_auc: Estimate | None
    mean_labels: float
    mean_called: float
    resampled: str


def label_thresholds(values: tuple[float, ...], names: tuple[str, ...]) -> NDArray[np.float64]:
    """``label-thresholds`` as one threshold per label (one value is every label's).

    Raises:
        ConfigError: Neither one value nor one per label.
    """
    if len(values) == 1:
        return np.full(len(names), values[0], dtype=np.float64)
    if len(values) != len(names):
        listed = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise ConfigError(
            f"label-thresholds gives {len(values)} thresholds for {len(names)} labels "
            f"({listed}); give one value for every label, or one per label in this order"
        )
    return np.asarray(values, dtype=np.float64)


def called(
    probabilities: NDArray[np.floating], thresholds: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """``(N, K)``: which labels each image is called positive for."""
    return np.asarray(probabilities >= thresholds[None, :])


def _interval(draws: NDArray[np.float64], value: float) -> Estimate:
    finite = draws[np.isfinite(draws)]
    if not np.isfinite(value) or not finite.size:
        return Estimate(value, float("nan"), float("nan"))
    low, high = np.quantile(finite, [0.025, 0.975])
    return Estimate(value, float(low), float(high))


def _best_threshold(truth: NDArray[np.bool_], scores: NDArray[np.float32]) -> float | None:
    if truth.all() or not truth.any():
        return None
    fpr, tpr, thresholds = skm.roc_curve(truth, scores)
    return float(min(thresholds[int(np.argmax(tpr - fpr))], 1.0))


def _aucs(
    truth: NDArray[np.bool_], probabilities: NDArray[np.float32], resampling: Resampling,
    resamples: int, seed: int,
) -> tuple[list[Estimate | None], Estimate | None]:  # fmt: skip
    """Every label's AUC and the macro AUC, their intervals from the same draws."""
    judged = [k for k in range(truth.shape[1]) if 0 < truth[:, k].sum() < truth.shape[0]]
    scores = probabilities.astype(np.float64)
    rng = np.random.default_rng([seed, 11])
    draws = [
        np.stack([weighted_curves(scores[:, k], truth[:, k], w)[0] for k in judged], axis=1)
        for w in resampling.chunks(truth.shape[0], resamples, rng)
    ] if judged else []  # fmt: skip
    drawn = np.concatenate(draws) if draws else np.empty((0, 0))
    values = {k: float(skm.roc_auc_score(truth[:, k], scores[:, k])) for k in judged}
    per_label: list[Estimate | None] = [None] * truth.shape[1]
    for column, k in enumerate(judged):
        per_label[k] = _interval(drawn[:, column], values[k])
    if not judged:
        return per_label, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample may lack a label's side
        macro = np.nanmean(drawn, axis=1)
    return per_label, _interval(macro, float(np.mean(list(values.values()))))


def _micro_auc(
    truth: NDArray[np.bool_], probabilities: NDArray[np.float32], resampling: Resampling,
    resamples: int, seed: int,
) -> Estimate | None:  # fmt: skip
    """The AUC of every (image, label) pair pooled, each image's pairs drawn together."""
    flat_truth = truth.ravel()
    if flat_truth.all() or not flat_truth.any():
        return None
    n, k = truth.shape
    scores = probabilities.astype(np.float64).ravel()
    chunk = max(1, min(200, _MICRO_CELLS // max(1, n * k)))
    rng = np.random.default_rng([seed, 13])
    drawn = np.concatenate([
        weighted_curves(scores, flat_truth, np.repeat(w, k, axis=1))[0]
        for w in resampling.chunks(n, resamples, rng, chunk)
    ])  # fmt: skip
    return _interval(drawn, float(skm.roc_auc_score(flat_truth, scores)))


def _label_rows(
    truth: NDArray[np.bool_], probabilities: NDArray[np.float32], names: tuple[str, ...],
    thresholds: NDArray[np.float64], calls: NDArray[np.bool_], draws: NDArray[np.float64],
) -> tuple[LabelRow, ...]:  # fmt: skip
    """Each label's row (its AUC left ``None``), its rates' intervals from ``draws``
    (sensitivities, then specificities)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a label no image has: NaN, said as such
        sensitivity = skm.recall_score(truth, calls, average=None, zero_division=np.nan)
        precision = skm.precision_score(truth, calls, average=None, zero_division=np.nan)
        f1 = skm.f1_score(truth, calls, average=None, zero_division=np.nan)
        specificity = np.divide(
            (~calls & ~truth).sum(axis=0), (~truth).sum(axis=0),
            out=np.full(len(names), np.nan), where=(~truth).any(axis=0),
        )  # fmt: skip
    k = len(names)
    return tuple(
        LabelRow(
            name=name,
            threshold=float(thresholds[j]),
            positives=int(truth[:, j].sum()),
            called=int(calls[:, j].sum()),
            sensitivity=_interval(draws[:, j], float(sensitivity[j])),
            specificity=_interval(draws[:, k + j], float(specificity[j])),
            precision=float(precision[j]),
            f1=float(f1[j]),
            auc=None,
            best_threshold=_best_threshold(truth[:, j], probabilities[:, j]),
        )
        for j, name in enumerate(names)
    )


def compute_label_metrics(
    truth: NDArray[np.bool_],
    probabilities: NDArray[np.float32],
    names: tuple[str, ...],
    thresholds: NDArray[np.float64],
    resamples: int = 1000,
    seed: int = 0,
    resampling: Resampling | None = None,
) -> LabelMetrics:
    """All metrics of a multi-label evaluation.

    Args:
        truth: ``(N, K)`` which labels each image has.
        probabilities: ``(N, K)`` each label's predicted probability.
        names: The K labels.
        thresholds: ``(K,)`` each label's decision threshold.
        resamples: Bootstrap resamples for the 95% intervals.
        seed: Bootstrap seed.
        resampling: What a resample draws (images by default; a patient column's groups).
    """
    resampling = resampling or Resampling()
    calls = called(probabilities, thresholds)
    n = truth.shape[0]
    exact = (calls == truth).all(axis=1)
    wrong = (calls != truth).mean(axis=1)
    values = np.concatenate([calls, ~calls, exact[:, None], wrong[:, None]], axis=1)
    of = np.concatenate([truth, ~truth, np.ones((n, 2), dtype=bool)], axis=1)
    draws = weighted_means(
        values.astype(np.float64), of, resampling, resamples, np.random.default_rng([seed, 7])
    )
    k = len(names)
    rows = _label_rows(truth, probabilities, names, thresholds, calls, draws)
    aucs, macro = _aucs(truth, probabilities, resampling, resamples, seed)
    rows = tuple(dataclasses.replace(row, auc=auc) for row, auc in zip(rows, aucs, strict=True))
    return LabelMetrics(
        n_images=n,
        labels=rows,
        subset_accuracy=_interval(draws[:, 2 * k], float(skm.accuracy_score(truth, calls))),
        hamming_loss=_interval(draws[:, 2 * k + 1], float(skm.hamming_loss(truth, calls))),
        macro_auc=macro,
        micro_auc=_micro_auc(truth, probabilities, resampling, resamples, seed),
        mean_labels=float(truth.sum(axis=1).mean()),
        mean_called=float(calls.sum(axis=1).mean()),
        resampled=resampling.describe(),
    )
