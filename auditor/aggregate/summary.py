"""The summary section: headline metrics, whether the explanations can be read, weakest classes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.performance import auc_name
from auditor.aggregate.trust import TrustSummary, trust_summary
from auditor.metrics import ECE_BINS, ClassMetrics, Estimate

__all__ = ["WORST_CLASSES", "SummaryView", "summary_view"]

WORST_CLASSES = 3
"""Classes shown in the summary's weakest-classes table."""


@dataclass(frozen=True)
class SummaryView:
    """The summary section.

    Attributes:
        auc_label: What ``macro_auc`` is (:func:`~auditor.aggregate.performance.auc_name`).
        ece_bins: Confidence bins behind ``ece``.
        n_classes: Classes of the model's output.
        n_errors: Misclassified images.
        output_kind: How the model's output was read, in words.
        trust: The trust checks in words.
        worst_classes: The classes with the lowest sensitivity, lowest first.
    """

    accuracy: Estimate
    balanced_accuracy: Estimate
    macro_auc: float | None
    auc_label: str
    ece: float
    ece_bins: int
    n_images: int
    n_classes: int
    n_excluded: int
    n_errors: int
    output_kind: str
    trust: TrustSummary
    worst_classes: tuple[ClassMetrics, ...]


def worst_classes(per_class: tuple[ClassMetrics, ...]) -> tuple[ClassMetrics, ...]:
    """The :data:`WORST_CLASSES` classes with images of lowest sensitivity (ties by name)."""
    ranked = sorted(
        (c for c in per_class if c.support > 0),
        key=lambda c: (c.sensitivity if not math.isnan(c.sensitivity) else -1.0, c.name),
    )
    return tuple(ranked[:WORST_CLASSES])


def summary_view(inputs: AuditInputs) -> SummaryView:
    """The headline figures, the trust verdicts in words and the weakest classes."""
    evaluation = inputs.evaluation
    metrics = evaluation.metrics
    return SummaryView(
        accuracy=metrics.accuracy,
        balanced_accuracy=metrics.balanced_accuracy,
        macro_auc=metrics.macro_auc,
        auc_label=auc_name(len(metrics.per_class)),
        ece=metrics.ece,
        ece_bins=ECE_BINS,
        n_images=metrics.n_images,
        n_classes=len(metrics.per_class),
        n_excluded=len(evaluation.excluded),
        n_errors=inputs.selection.n_errors,
        output_kind=evaluation.output_kind.value,
        trust=trust_summary(inputs.trust),
        worst_classes=worst_classes(metrics.per_class),
    )
