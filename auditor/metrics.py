"""Classification and calibration metrics from per-image predictions.

scikit-learn computes every metric it has (accuracy, balanced accuracy, precision,
recall, F1, ROC AUC); what it lacks is written here: specificity, the expected
calibration error with its reliability bins, a vectorised seeded bootstrap for the
confidence intervals, and the confusion matrix kept sparse (its non-zero cells, at most
one per image), so that a model with 10,000 classes costs what its images cost, not a
10,000 x 10,000 array.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn import metrics as skm

from auditor.resample import Resampling, grouped_sums

__all__ = [
    "CalibrationBin",
    "ClassMetrics",
    "Confusion",
    "Estimate",
    "Metrics",
    "bootstrap_ci",
    "calibration_bins",
    "compute_metrics",
    "confusions",
    "dense_confusion",
    "equal_width_bin",
    "expected_calibration_error",
]

ECE_BINS = 15


@dataclass(frozen=True)
class Estimate:
    """A metric with its 95% bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class ClassMetrics:
    """One-vs-rest metrics of one class. NaN where undefined (no support, one class only)."""

    name: str
    precision: float
    sensitivity: float
    specificity: float
    f1: float
    support: int
    auc: float


@dataclass(frozen=True)
class Confusion:
    """One non-zero cell of the confusion matrix: ``count`` images of class ``true``
    predicted as ``predicted`` (indices into the class list)."""

    true: int
    predicted: int
    count: int


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin of the reliability diagram."""

    lower: float
    upper: float
    count: int
    accuracy: float
    confidence: float


@dataclass(frozen=True)
class Metrics:
    """Headline, per-class and calibration metrics of one evaluation."""

    n_images: int
    accuracy: Estimate
    balanced_accuracy: Estimate
    macro_auc: float | None
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[Confusion, ...]
    ece: float
    calibration: tuple[CalibrationBin, ...]


def _balanced_accuracy_many(
    labels: NDArray[np.int64], correct: NDArray[np.bool_], weights: NDArray[np.float64],
    n_classes: int,
) -> NDArray[np.float64]:  # fmt: skip
    """Balanced accuracy of each resample (row of ``weights``): the mean recall over the
    classes it draws."""
    support = grouped_sums(labels, weights, n_classes)
    hits = grouped_sums(labels, weights * correct, n_classes)
    recall = np.divide(hits, support, out=np.full(support.shape, np.nan), where=support > 0)
    return np.asarray(np.nanmean(recall, axis=1), dtype=np.float64)


def bootstrap_ci(
    labels: NDArray[np.int64],
    preds: NDArray[np.int64],
    n_classes: int,
    resamples: int,
    seed: int,
    chunk: int = 200,
    resampling: Resampling | None = None,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile 95% intervals of accuracy and balanced accuracy.

    Resamples images with replacement (or the groups of ``resampling``), ``chunk``
    resamples at a time so that memory stays at ``chunk * N`` weights whatever the data
    set size.

    Returns:
        ``((acc_low, acc_high), (bal_low, bal_high))``.
    """
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    correct = labels == preds
    accuracy: list[NDArray[np.float64]] = []
    balanced: list[NDArray[np.float64]] = []
    for weights in (resampling or Resampling()).chunks(n, resamples, rng, chunk):
        accuracy.append(weights @ correct / weights.sum(axis=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            balanced.append(_balanced_accuracy_many(labels, correct, weights, n_classes))
    acc = np.concatenate(accuracy)
    bal = np.concatenate(balanced)
    return (
        (float(np.quantile(acc, 0.025)), float(np.quantile(acc, 0.975))),
        (float(np.nanquantile(bal, 0.025)), float(np.nanquantile(bal, 0.975))),
    )


def _macro_auc(
    labels: NDArray[np.int64], probabilities: NDArray[np.float32], n_classes: int
) -> float:
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    if n_classes == 2:
        return float(skm.roc_auc_score(labels, probabilities[:, 1]))
    aucs = [
        skm.roc_auc_score(labels == k, probabilities[:, k]) for k in present if (labels != k).any()
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def equal_width_bin(values: NDArray[np.floating], bins: int) -> NDArray[np.int64]:
    """The bin of each value among ``bins`` equal-width bins over [0, 1], each
    ``(lower, upper]`` and the first also holding 0 (so 1 falls in the last)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(values, edges[1:-1], right=True), 0, bins - 1).astype(np.int64)


def calibration_bins(
    confidence: NDArray[np.float32], correct: NDArray[np.bool_], bins: int = ECE_BINS
) -> tuple[CalibrationBin, ...]:
    """Equal-width confidence bins over [0, 1]; a confidence of exactly 1 falls in the last."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = equal_width_bin(confidence, bins)
    result = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        result.append(
            CalibrationBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                accuracy=float(correct[members].mean()) if count else float("nan"),
                confidence=float(confidence[members].mean()) if count else float("nan"),
            )
        )
    return tuple(result)


def expected_calibration_error(calibration: tuple[CalibrationBin, ...]) -> float:
    """ECE (Naeini et al., 2015; Guo et al., 2017): count-weighted mean |accuracy - confidence|."""
    total = sum(b.count for b in calibration)
    if total == 0:
        return float("nan")
    return float(
        sum(b.count * abs(b.accuracy - b.confidence) for b in calibration if b.count) / total
    )


def compute_metrics(
    labels: NDArray[np.int64],
    probabilities: NDArray[np.float32],
    classes: tuple[str, ...],
    bootstrap: int = 1000,
    seed: int = 0,
    resampling: Resampling | None = None,
) -> Metrics:
    """All metrics of one evaluation.

    Args:
        labels: ``(N,)`` true class indices.
        probabilities: ``(N, K)`` predicted class probabilities.
        classes: The K class names.
        bootstrap: Number of resamples for the confidence intervals.
        seed: Bootstrap seed.
        resampling: What a resample draws (images by default; a patient column's groups).
    """
    n_classes = len(classes)
    preds = probabilities.argmax(axis=1).astype(np.int64)
    confidence = probabilities.max(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        balanced = float(skm.balanced_accuracy_score(labels, preds))
    (acc_low, acc_high), (bal_low, bal_high) = bootstrap_ci(
        labels, preds, n_classes, bootstrap, seed, resampling=resampling
    )
    calibration = calibration_bins(confidence, preds == labels)
    macro_auc = _macro_auc(labels, probabilities, n_classes)
    return Metrics(
        n_images=int(labels.shape[0]),
        accuracy=Estimate(float(skm.accuracy_score(labels, preds)), acc_low, acc_high),
        balanced_accuracy=Estimate(balanced, bal_low, bal_high),
        macro_auc=None if np.isnan(macro_auc) else macro_auc,
        per_class=_per_class(labels, preds, probabilities, classes),
        confusion=confusions(labels, preds),
        ece=expected_calibration_error(calibration),
        calibration=calibration,
    )


def _per_class(
    labels: NDArray[np.int64],
    preds: NDArray[np.int64],
    probabilities: NDArray[np.float32],
    classes: tuple[str, ...],
) -> tuple[ClassMetrics, ...]:
    """One-vs-rest metrics of every class (NaN where undefined); O(N + K), no K x K array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            labels, preds, labels=list(range(len(classes))), zero_division=np.nan
        )
    n_classes, total = len(classes), labels.shape[0]
    predicted = np.bincount(preds, minlength=n_classes)
    hits = np.bincount(labels[labels == preds], minlength=n_classes)
    per_class = []
    for k, name in enumerate(classes):
        negatives = total - support[k]
        true_negative = negatives - (predicted[k] - hits[k])
        auc = (
            float(skm.roc_auc_score(labels == k, probabilities[:, k]))
            if 0 < support[k] < total
            else float("nan")
        )
        per_class.append(
            ClassMetrics(
                name=name,
                precision=float(precision[k]),
                sensitivity=float(recall[k]),
                specificity=float(true_negative / negatives) if negatives else float("nan"),
                f1=float(f1[k]),
                support=int(support[k]),
                auc=auc,
            )
        )
    return tuple(per_class)


def confusions(labels: NDArray[np.int64], preds: NDArray[np.int64]) -> tuple[Confusion, ...]:
    """The non-zero cells of the confusion matrix, by true class then predicted class."""
    if labels.size == 0:
        return ()
    cells, counts = np.unique(np.stack([labels, preds], axis=1), axis=0, return_counts=True)
    return tuple(
        Confusion(int(true), int(predicted), int(count))
        for (true, predicted), count in zip(cells, counts, strict=True)
    )


def dense_confusion(cells: tuple[Confusion, ...], n_classes: int) -> NDArray[np.int64]:
    """The ``(K, K)`` matrix of ``cells`` (rows: true class); for a figure of few classes."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    for cell in cells:
        matrix[cell.true, cell.predicted] = cell.count
    return matrix
