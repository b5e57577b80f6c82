"""The performance section: headline metrics with their bootstrap intervals, per class."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.figures import confusion_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.metrics import ClassMetrics, Estimate

__all__ = ["PerformanceView", "auc_name", "performance_view"]


def auc_name(n_classes: int) -> str:
    """What ``macro_auc`` is for this many classes (lower case)."""
    return "ROC AUC" if n_classes == 2 else "macro one-vs-rest ROC AUC"


@dataclass(frozen=True)
class PerformanceView:
    """The performance section.

    Attributes:
        auc_label: :func:`auc_name`, capitalised for a table row.
        bootstrap: Bootstrap resamples behind the intervals.
        seed: Seed of the resampling.
        confusion_figure: The confusion matrix (PNG data URI).
    """

    accuracy: Estimate
    balanced_accuracy: Estimate
    auc_label: str
    macro_auc: float | None
    bootstrap: int
    seed: int
    per_class: tuple[ClassMetrics, ...]
    confusion_figure: str


def performance_view(inputs: AuditInputs) -> PerformanceView:
    """Accuracy, balanced accuracy and AUC with how their intervals were drawn."""
    evaluation = inputs.evaluation
    metrics = evaluation.metrics
    name = auc_name(len(metrics.per_class))
    return PerformanceView(
        accuracy=metrics.accuracy,
        balanced_accuracy=metrics.balanced_accuracy,
        auc_label=name[:1].upper() + name[1:],
        macro_auc=metrics.macro_auc,
        bootstrap=evaluation.settings.bootstrap,
        seed=evaluation.settings.seed,
        per_class=metrics.per_class,
        confusion_figure=confusion_figure(metrics.confusion_matrix, inputs.dataset.classes),
    )
