"""Page one, the answer: the verdict, the headline figures and every finding in words.

Each finding is one sentence with its figures, linked to the section that shows how it
was reached; the same sentences are in ``summary.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.calibration import calibration_sentence
from auditor.aggregate.changes import comparison_sentences
from auditor.aggregate.counterfactuals import counterfactual_findings
from auditor.aggregate.datasheet import duplicates_sentence
from auditor.aggregate.dependence import (
    dependence_findings,
    dependence_unfound,
    subgroup_failures,
)
from auditor.aggregate.dissection import dissection_findings
from auditor.aggregate.failures import failures_sentence
from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.operating import operating_sentence
from auditor.aggregate.performance import auc_name, worst_classes
from auditor.aggregate.robustness import fragile_sentence, robustness_findings
from auditor.aggregate.similarity import similarity_findings
from auditor.aggregate.tcav import artifact_tcav
from auditor.aggregate.trust import TrustSummary, trust_summary
from auditor.metrics import ClassMetrics, Estimate, Metrics
from auditor.precision import precision_sentence

__all__ = ["WORST_CLASSES", "Headline", "SummaryView", "summary_view"]

WORST_CLASSES = 3
"""Classes shown in the summary's weakest-classes table."""


@dataclass(frozen=True)
class Headline:
    """One headline figure with its 95% interval.

    Attributes:
        percent: Whether it is a proportion (shown as a percentage), else a number.
    """

    label: str
    estimate: Estimate
    percent: bool


@dataclass(frozen=True)
class SummaryView:
    """The summary section.

    Attributes:
        auc_label: What ``macro_auc`` is (:func:`~auditor.aggregate.performance.auc_name`).
        n_classes: Classes of the model's output.
        n_errors: Misclassified images.
        output_kind: How the model's output was read, in words.
        trust: The trust checks in words.
        worst_classes: The classes with the lowest sensitivity, lowest first.
        operating: The operating point in one sentence ("" without one).
        calibration: The positive class's calibration in one sentence ("" without one).
        failures: The confident errors in one sentence.
        dependence: Each metadata column the prediction depends on, in words.
        dependence_tested: Whether metadata dependence was computed.
        dependence_unfound: Why no column is a dependence finding ("" when one is).
        robustness: Each fragile perturbation, in words.
        robustness_tested: Whether the robustness suite ran.
        robustness_perturbations: Perturbations it tried.
        policy_declared: Acceptance criteria declared.
        policy_failed: Each criterion not met, with why.
        headline: The operating point's sensitivity and specificity and the ROC AUC (for
            a model read as a test), then accuracy, each with its 95% interval.
        subgroups: Each subgroup whose sensitivity or specificity is below the rest's,
            from the metadata-dependence findings, in words with its figures.
        fragile: The fragile perturbations in one sentence ("" when none).
        duplicates: The byte-identical images in one sentence ("" when none).
        artifact_units: Each layer whose units detect an artefact concept, in words.
        artifact_tcav: Each class whose score moves along an artefact concept (TCAV).
        similarity: What organises the embedding beyond the class, near-duplicates and
            leakage, in words.
        counterfactuals: Artefact concepts whose removal changes misclassified calls.
        changes: The significant changes since the previous audit.
        compared: Whether there was a previous audit to compare with.
        not_compared: Why the history's earlier runs were not compared with ("" if they
            were, or if there are none).
        precision: What mixed precision changed, when it changed a call ("" otherwise).
    """

    accuracy: Estimate
    balanced_accuracy: Estimate
    macro_auc: float | None
    auc_label: str
    ece: float
    n_images: int
    n_classes: int
    n_excluded: int
    n_errors: int
    output_kind: str
    trust: TrustSummary
    worst_classes: tuple[ClassMetrics, ...]
    operating: str
    calibration: str
    failures: str
    dependence: tuple[str, ...]
    dependence_tested: bool
    dependence_unfound: str
    robustness: tuple[str, ...]
    robustness_tested: bool
    robustness_perturbations: int
    policy_declared: int
    policy_failed: tuple[str, ...]
    headline: tuple[Headline, ...]
    subgroups: tuple[str, ...]
    fragile: str
    duplicates: str
    artifact_units: tuple[str, ...]
    artifact_tcav: tuple[str, ...]
    similarity: tuple[str, ...]
    counterfactuals: tuple[str, ...]
    changes: tuple[str, ...]
    compared: bool
    not_compared: str
    precision: str


def _headline(inputs: AuditInputs, metrics: Metrics) -> tuple[Headline, ...]:
    accuracy = Headline("accuracy", metrics.accuracy, percent=True)
    operating = inputs.clinical.operating
    if operating is None:
        balanced = Headline("balanced accuracy", metrics.balanced_accuracy, percent=True)
        return (accuracy, balanced)
    s, p = operating.sensitivity, operating.specificity
    at = f"for {operating.positive_class} at threshold {operating.threshold:g}"
    return (
        Headline(f"sensitivity {at}", Estimate(s.value, s.ci_low, s.ci_high), percent=True),
        Headline(f"specificity {at}", Estimate(p.value, p.ci_low, p.ci_high), percent=True),
        Headline("ROC AUC", Estimate(*operating.auc), percent=False),
        accuracy,
    )


def summary_view(inputs: AuditInputs) -> SummaryView | None:
    """The headline figures, the trust verdicts in words and the weakest classes (``None``
    for a multi-label model: see :mod:`auditor.aggregate.labels`)."""
    evaluation = inputs.evaluation
    metrics = evaluation.metrics
    if metrics is None:
        return None
    return SummaryView(
        accuracy=metrics.accuracy,
        balanced_accuracy=metrics.balanced_accuracy,
        macro_auc=metrics.macro_auc,
        auc_label=auc_name(len(metrics.per_class)),
        ece=metrics.ece,
        n_images=metrics.n_images,
        n_classes=len(metrics.per_class),
        n_excluded=len(evaluation.excluded),
        n_errors=inputs.selection.n_errors,
        output_kind=evaluation.output_kind.value,
        trust=trust_summary(inputs.trust),
        worst_classes=worst_classes(metrics.per_class, WORST_CLASSES),
        operating=operating_sentence(inputs.clinical.operating),
        calibration=calibration_sentence(inputs.clinical.calibration),
        failures=failures_sentence(inputs.clinical.failures),
        dependence=dependence_findings(inputs.clinical.dependence, inputs),
        dependence_tested=inputs.clinical.dependence is not None,
        dependence_unfound=dependence_unfound(inputs.clinical.dependence, False),
        robustness=robustness_findings(inputs.robustness),
        robustness_tested=inputs.robustness is not None,
        robustness_perturbations=(
            len({row.perturbation for row in inputs.robustness.rows}) if inputs.robustness else 0
        ),
        duplicates=duplicates_sentence(inputs.evaluation.predictions),
        artifact_units=dissection_findings(inputs.concepts.dissection),
        artifact_tcav=artifact_tcav(inputs),
        similarity=similarity_findings(inputs.similarity),
        counterfactuals=counterfactual_findings(inputs.counterfactuals),
        policy_declared=len(inputs.policy.outcomes),
        policy_failed=tuple(f"{o.criterion.text}: {o.reason}" for o in inputs.policy.failed),
        headline=_headline(inputs, metrics),
        subgroups=subgroup_failures(inputs.clinical.dependence),
        fragile=fragile_sentence(inputs.robustness),
        changes=comparison_sentences(inputs.comparison),
        compared=inputs.comparison is not None,
        not_compared=inputs.comparison_note,
        precision=_precision_finding(inputs),
    )


def _precision_finding(inputs: AuditInputs) -> str:
    """The precision check's sentence when mixed precision changed a call ("" otherwise)."""
    check = inputs.evaluation.precision_check
    return precision_sentence(check) if check is not None and check.agree < check.images else ""
