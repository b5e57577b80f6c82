"""The performance section: headline metrics with their bootstrap intervals, per class.

Up to ``report-classes`` classes the section lists every class and draws the confusion
matrix. Above it, a K x K figure or a K-row table would be unreadable (and slow to lay
out), so the section lists the weakest classes and the most frequent confusions instead;
``metrics.json`` keeps every class and every non-zero cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from auditor.aggregate.figures import confusion_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.metrics import ClassMetrics, Confusion, Estimate, dense_confusion
from auditor.precision import precision_sentence

__all__ = [
    "ConfusionRow",
    "PerformanceView",
    "auc_name",
    "performance_view",
    "top_confusions",
    "worst_classes",
]


def auc_name(n_classes: int) -> str:
    """What ``macro_auc`` is for this many classes (lower case)."""
    return "ROC AUC" if n_classes == 2 else "macro one-vs-rest ROC AUC"


SMALL_CONFUSION = 3
"""Classes up to which the confusion matrix is drawn small."""


@dataclass(frozen=True)
class ConfusionRow:
    """Images of one true class predicted as one other class.

    Attributes:
        share: Of the true class's images.
    """

    true: str
    predicted: str
    images: int
    share: float


@dataclass(frozen=True)
class PerformanceView:
    """The performance section.

    Attributes:
        auc_label: :func:`auc_name`, capitalised for a table row.
        bootstrap: Bootstrap resamples behind the intervals.
        seed: Seed of the resampling.
        n_classes: Classes of the model's output.
        every_class: Whether every class is listed (``n_classes <= report-classes``).
        per_class: Every class in output order; else the weakest classes with images.
        confusion_figure: The confusion matrix (PNG data URI); only when ``every_class``.
        small_confusion: Whether it is drawn small (at most :data:`SMALL_CONFUSION` classes).
        confusions: The most frequent confusions; only when not ``every_class``.
        n_confused_pairs: Distinct (true, predicted) pairs of different classes.
        precision: What mixed precision changed against float32, in one sentence ("" in
            float32).
    """

    accuracy: Estimate
    balanced_accuracy: Estimate
    auc_label: str
    macro_auc: float | None
    bootstrap: int
    resampled: str
    seed: int
    n_classes: int
    every_class: bool
    per_class: tuple[ClassMetrics, ...]
    auc_intervals: dict[str, Estimate]
    confusion_figure: str | None
    small_confusion: bool
    confusions: tuple[ConfusionRow, ...]
    n_confused_pairs: int
    precision: str


def worst_classes(per_class: tuple[ClassMetrics, ...], count: int) -> tuple[ClassMetrics, ...]:
    """The ``count`` classes with images of lowest sensitivity (ties by name)."""
    ranked = sorted(
        (c for c in per_class if c.support > 0),
        key=lambda c: (c.sensitivity if not math.isnan(c.sensitivity) else -1.0, c.name),
    )
    return tuple(ranked[:count])


def top_confusions(
    cells: tuple[Confusion, ...], per_class: tuple[ClassMetrics, ...], count: int
) -> tuple[ConfusionRow, ...]:
    """The ``count`` off-diagonal cells with most images (ties in class order)."""
    errors = sorted(
        (c for c in cells if c.true != c.predicted),
        key=lambda c: (-c.count, c.true, c.predicted),
    )
    return tuple(
        ConfusionRow(
            true=per_class[c.true].name,
            predicted=per_class[c.predicted].name,
            images=c.count,
            share=c.count / per_class[c.true].support,
        )
        for c in errors[:count]
    )


def performance_view(inputs: AuditInputs) -> PerformanceView | None:
    """Accuracy, balanced accuracy and AUC with how their intervals were drawn; per class
    (``None`` for a multi-label model: see :mod:`auditor.aggregate.labels`)."""
    evaluation = inputs.evaluation
    metrics = evaluation.metrics
    if metrics is None:
        return None
    n_classes, limit = len(metrics.per_class), inputs.config.report_classes
    every_class = n_classes <= limit
    name = auc_name(n_classes)
    return PerformanceView(
        precision=precision_sentence(evaluation.precision_check),
        accuracy=metrics.accuracy,
        balanced_accuracy=metrics.balanced_accuracy,
        auc_label=name[:1].upper() + name[1:],
        macro_auc=metrics.macro_auc,
        bootstrap=evaluation.settings.bootstrap,
        resampled=inputs.clinical.resampling.describe(),
        seed=evaluation.settings.seed,
        n_classes=n_classes,
        every_class=every_class,
        small_confusion=n_classes <= SMALL_CONFUSION,
        per_class=metrics.per_class if every_class else worst_classes(metrics.per_class, limit),
        auc_intervals={k: Estimate(*v) for k, v in inputs.clinical.class_auc.items()},
        confusion_figure=(
            confusion_figure(dense_confusion(metrics.confusion, n_classes), inputs.dataset.classes)
            if every_class
            else None
        ),
        confusions=()
        if every_class
        else top_confusions(metrics.confusion, metrics.per_class, limit),
        n_confused_pairs=sum(c.true != c.predicted for c in metrics.confusion),
    )
