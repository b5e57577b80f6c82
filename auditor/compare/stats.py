"""Two audits' metrics side by side: the difference and its bootstrap interval, paired
when both audits scored the same images, and McNemar's exact test on their calls.

Paired: the images both audits scored (matched by file SHA-256) are resampled once per
bootstrap draw, and each metric is recomputed on the same draw for both audits, so the
interval is of the change on the same images. Unpaired: each audit's images are resampled
on their own. Intervals are percentile intervals (2.5 and 97.5); a draw where a metric
is undefined (an AUC with one class) is left out of that metric's interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

__all__ = ["Calls", "Difference", "difference", "mcnemar"]


@dataclass(frozen=True)
class Calls:
    """One audit's calls on its images: true labels, predictions, the positive class's
    probability (binary audits) and its operating threshold. A multi-label audit's
    ``label`` and ``prediction`` are ``(N, K)`` booleans: which labels each image has and
    which were called."""

    label: np.ndarray
    prediction: np.ndarray
    positive: np.ndarray | None = None
    threshold: float | None = None

    def take(self, rows: np.ndarray) -> Calls:
        positive = None if self.positive is None else self.positive[rows]
        return Calls(self.label[rows], self.prediction[rows], positive, self.threshold)

    @property
    def correct(self) -> np.ndarray:
        """Each image called right (a multi-label image: its whole set of labels)."""
        right = self.label == self.prediction
        return right.all(axis=1) if right.ndim == 2 else right


def _accuracy(c: Calls) -> float:
    return float(np.mean(c.correct)) if c.label.size else float("nan")


def _label_accuracy(c: Calls) -> float:
    """Share of (image, label) calls that are right: 1 − the Hamming loss."""
    return float(np.mean(c.label == c.prediction)) if c.label.size else float("nan")


def _balanced_accuracy(c: Calls) -> float:
    recalls = [np.mean(c.prediction[c.label == k] == k) for k in np.unique(c.label)]
    return float(np.mean(recalls)) if recalls else float("nan")


def _auc(c: Calls) -> float:
    if c.positive is None or np.unique(c.label == 1).size < 2:
        return float("nan")
    return float(roc_auc_score(c.label == 1, c.positive))


def _rate(c: Calls, truth: int) -> float:
    """Sensitivity (``truth`` 1) or specificity (0): the positive class's probability read
    at the threshold, or, without them, the calls (one label of a multi-label audit,
    called as the audit wrote it)."""
    if c.label.ndim != 1 or not np.any(c.label == truth):
        return float("nan")
    if c.positive is not None and c.threshold is not None:
        called = c.positive[c.label == truth] >= c.threshold
    else:
        called = c.prediction[c.label == truth] == 1
    return float(np.mean(called if truth == 1 else ~called))


METRICS: dict[str, Callable[[Calls], float]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "auc": _auc,
    "sensitivity": lambda c: _rate(c, 1),
    "specificity": lambda c: _rate(c, 0),
    "subset_accuracy": _accuracy,
    "label_accuracy": _label_accuracy,
}
"""The compared metrics, each computed from an audit's calls: ``accuracy`` and
``balanced_accuracy`` of a single-label audit, ``auc``, ``sensitivity`` and
``specificity`` of a binary one (the positive class is label 1) and of each label of a
multi-label audit, ``subset_accuracy`` (the whole set of labels right) and
``label_accuracy`` of a multi-label audit."""


@dataclass(frozen=True)
class Difference:
    """A metric before and after, and the after − before difference with its interval."""

    name: str
    before: float
    after: float
    diff: float
    ci_low: float
    ci_high: float
    n_before: int
    n_after: int

    @property
    def worse(self) -> bool:
        """The whole interval is below zero: a significant fall."""
        return bool(self.ci_high < 0)

    @property
    def better(self) -> bool:
        return bool(self.ci_low > 0)


def _interval(draws: list[float], level: float) -> tuple[float, float]:
    kept = np.asarray([d for d in draws if np.isfinite(d)])
    if not kept.size:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(kept, [tail, 100 - tail])
    return float(low), float(high)


def difference(
    name: str,
    old: Calls,
    new: Calls,
    pairs: tuple[np.ndarray, np.ndarray] | None,
    resamples: int,
    rng: np.random.Generator,
    level: float = 0.95,
) -> Difference:
    """``name`` before and after, and the bootstrap interval (at ``level``) of the change.

    Args:
        pairs: Rows of ``old`` and of ``new`` that hold the same images (paired: before,
            after and the change are all measured on them), or ``None`` (unpaired: each
            audit on all its images, resampled on its own).
    """
    metric = METRICS[name]
    if pairs is not None:
        old, new = old.take(pairs[0]), new.take(pairs[1])
    before, after = metric(old), metric(new)
    n_old, n_new = len(old.label), len(new.label)
    draws = []
    for _ in range(resamples):
        if pairs is not None:
            pick = rng.integers(0, n_old, n_old)
            draws.append(metric(new.take(pick)) - metric(old.take(pick)))
        else:
            draws.append(
                metric(new.take(rng.integers(0, n_new, n_new)))
                - metric(old.take(rng.integers(0, n_old, n_old)))
            )
    low, high = _interval(draws, level)
    return Difference(name, before, after, after - before, low, high, n_old, n_new)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired calls: ``b`` images only the old audit called
    right, ``c`` only the new one; ``p_value`` is the two-sided binomial test of ``b``
    in ``b + c`` at one half, ``p_worse`` the one-sided test that more calls became
    wrong than right (both 1 when no image changed)."""

    b: int
    c: int
    p_value: float
    p_worse: float


def mcnemar(old_correct: np.ndarray, new_correct: np.ndarray) -> McNemar:
    """McNemar's exact test on the paired correct/incorrect calls of two audits."""
    b = int(np.sum(old_correct & ~new_correct))
    c = int(np.sum(~old_correct & new_correct))
    if not b + c:
        return McNemar(b, c, 1.0, 1.0)
    two_sided = float(binomtest(b, b + c, 0.5).pvalue)
    return McNemar(b, c, two_sided, float(binomtest(b, b + c, 0.5, alternative="greater").pvalue))
