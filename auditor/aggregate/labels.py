"""A multi-label model's page one and performance section: each label as a binary test
at its threshold, and the whole set of labels.

Every figure is :class:`~auditor.multilabel.metrics.LabelMetrics`' (``metrics.json``'s
``multi_label``) or a count over ``predictions.csv``'s ``label`` and ``prediction`` cells
(the wrong calls per label are the failure modes', :mod:`auditor.multilabel.failures`).
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.changes import comparison_sentences
from auditor.aggregate.counterfactuals import counterfactual_findings
from auditor.aggregate.datasheet import duplicates_sentence
from auditor.aggregate.dependence import (
    dependence_findings,
    dependence_unfound,
    subgroup_failures,
)
from auditor.aggregate.dissection import dissection_findings
from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.label_calibration import (
    label_calibration_findings,
    label_calibration_unfound,
)
from auditor.aggregate.label_failures import label_failures_sentence
from auditor.aggregate.robustness import fragile_sentence
from auditor.aggregate.similarity import similarity_findings
from auditor.aggregate.summary import Headline
from auditor.aggregate.tcav import artifact_tcav
from auditor.aggregate.trust import TrustSummary, trust_summary
from auditor.multilabel.failures import LabelWrongCalls
from auditor.multilabel.metrics import LabelMetrics, LabelRow
from auditor.precision import precision_sentence

__all__ = ["LabelSummaryView", "LabelsView", "label_summary_view", "labels_view"]


@dataclass(frozen=True)
class LabelSummaryView:
    """Page one of a multi-label audit.

    Attributes:
        headline: Subset accuracy, Hamming loss, macro and micro AUC, with their intervals.
        n_errors: Images with at least one label wrong.
        labels: Every label's row, lowest sensitivity first.
        findings: The errors and the labels that cannot be judged, one sentence each.
        dependence: Each metadata column a label's calls depend on, in words.
        subgroups: The subgroups those dependences fail, in words.
        dependence_tested: Whether metadata dependence was computed.
        dependence_unfound: Why no column is a dependence finding ("" when one is).
        calibration: The labels whose calibration slope's interval excludes 1, in words.
        calibration_unfound: Why no label is miscalibrated, in words ("" when one is).
        failures: The confident wrong label calls, in words.
        n_confident: Confident wrong label calls.
        fragile: The fragile perturbations in one sentence ("" when none).
        robustness_perturbations: Perturbations tried (0: the suite did not run).
        policy_declared: Acceptance criteria declared.
        policy_failed: Each criterion not met, with why.
        changes: The comparison's findings, one sentence each (empty: none, or no
            previous audit).
        compared: Whether it was compared with a previous audit.
        not_compared: Why the previous audit could not be compared with ("" otherwise).
        similarity: What organises the embedding beyond the set of labels, near-duplicates
            and leakage, in words.
        artifact_units: Each layer whose units detect an artefact concept (network
            dissection), in words.
        artifact_tcav: Each label whose score moves along an artefact concept (TCAV).
        counterfactuals: Artefact concepts whose removal flips misclassified images'
            wrong calls (segment counterfactuals).
    """

    headline: tuple[Headline, ...]
    n_images: int
    n_labels: int
    n_excluded: int
    n_errors: int
    mean_labels: float
    mean_called: float
    output_kind: str
    labels: tuple[LabelRow, ...]
    findings: tuple[str, ...]
    dependence: tuple[str, ...]
    subgroups: tuple[str, ...]
    dependence_tested: bool
    dependence_unfound: str
    calibration: tuple[str, ...]
    calibration_unfound: str
    failures: str
    n_confident: int
    fragile: str
    robustness_perturbations: int
    trust: TrustSummary
    precision: str
    duplicates: str
    policy_declared: int
    policy_failed: tuple[str, ...]
    changes: tuple[str, ...]
    compared: bool
    not_compared: str
    similarity: tuple[str, ...]
    artifact_units: tuple[str, ...]
    artifact_tcav: tuple[str, ...]
    counterfactuals: tuple[str, ...]


@dataclass(frozen=True)
class LabelsView:
    """The performance section of a multi-label audit.

    Attributes:
        labels: Every label's row, in output order.
        whole: ``(name, estimate, percent)`` of the whole-set metrics.
        resampled: What a bootstrap resample drew, in words.
        resamples: Bootstrap resamples.
        precision: What mixed precision changed ("" in float32).
    """

    labels: tuple[LabelRow, ...]
    whole: tuple[Headline, ...]
    mean_labels: float
    mean_called: float
    resampled: str
    resamples: int
    precision: str


def _whole(metrics: LabelMetrics) -> tuple[Headline, ...]:
    found = [
        Headline("subset accuracy (every label right)", metrics.subset_accuracy, percent=True),
        Headline("Hamming loss (share of wrong label calls)", metrics.hamming_loss, percent=True),
    ]
    for name, auc in (("macro", metrics.macro_auc), ("micro", metrics.micro_auc)):
        if auc is not None:
            found.append(Headline(f"{name}-averaged ROC AUC", auc, percent=False))
    return tuple(found)


def _findings(
    metrics: LabelMetrics, errors: tuple[LabelWrongCalls, ...], n_wrong: int
) -> tuple[str, ...]:
    """The errors in words, and the labels whose sensitivity or specificity is undefined."""
    found = []
    if n_wrong and errors:
        share = n_wrong / metrics.n_images
        worst = max(errors, key=lambda e: (e.missed + e.false, -errors.index(e)))
        found.append(
            f"{n_wrong:,} of {metrics.n_images:,} images ({share:.1%}) have at least one label "
            f"wrong; the most wrong calls are for {worst.label}: missed on {worst.missed:,} "
            f"image(s) that have it, called on {worst.false:,} that do not."
        )
    weakest = min(
        (r for r in metrics.labels if r.positives), key=lambda r: r.sensitivity.value, default=None
    )
    if weakest is not None and weakest.sensitivity.value < 1:
        s, p = weakest.sensitivity, weakest.specificity
        found.append(
            f"The label found least often is {weakest.name}: sensitivity {s.value:.1%} (95% CI "
            f"{s.ci_low:.1%} – {s.ci_high:.1%}) on the {weakest.positives:,} images that have "
            f"it, specificity {p.value:.1%}, at threshold {weakest.threshold:g}."
        )
    for row in metrics.labels:
        if row.positives in (0, metrics.n_images):
            which = "no image has it" if row.positives == 0 else "every image has it"
            found.append(
                f"{row.name} cannot be judged here: {which}, so its "
                f"{'sensitivity' if row.positives == 0 else 'specificity'} and AUC are undefined."
            )
    return tuple(found)


def label_summary_view(inputs: AuditInputs) -> LabelSummaryView | None:
    """Page one of a multi-label audit (``None`` for a single-label model)."""
    evaluation = inputs.evaluation
    metrics = evaluation.label_metrics
    if metrics is None:
        return None
    check = evaluation.precision_check
    n_wrong = int((~evaluation.predictions["correct"]).sum())
    wrong = inputs.clinical.label_failures
    return LabelSummaryView(
        headline=_whole(metrics),
        n_images=metrics.n_images,
        n_labels=len(metrics.labels),
        n_excluded=len(evaluation.excluded),
        n_errors=n_wrong,
        mean_labels=metrics.mean_labels,
        mean_called=metrics.mean_called,
        output_kind=evaluation.output_kind.value,
        labels=tuple(sorted(metrics.labels, key=lambda r: (r.positives == 0, r.sensitivity.value))),
        findings=_findings(metrics, wrong.by_label if wrong else (), n_wrong),
        dependence=dependence_findings(inputs.clinical.dependence, inputs),
        subgroups=subgroup_failures(inputs.clinical.dependence),
        dependence_tested=inputs.clinical.dependence is not None,
        dependence_unfound=dependence_unfound(inputs.clinical.dependence, True),
        calibration=label_calibration_findings(inputs.clinical.label_calibration),
        calibration_unfound=label_calibration_unfound(inputs.clinical.label_calibration),
        failures=label_failures_sentence(wrong),
        n_confident=len(wrong.confident) if wrong else 0,
        fragile=fragile_sentence(inputs.robustness),
        robustness_perturbations=(
            len({row.perturbation for row in inputs.robustness.rows}) if inputs.robustness else 0
        ),
        trust=trust_summary(inputs.trust),
        precision=precision_sentence(check) if check and check.agree < check.images else "",
        duplicates=duplicates_sentence(evaluation.predictions),
        policy_declared=len(inputs.policy.outcomes),
        policy_failed=tuple(f"{o.criterion.text}: {o.reason}" for o in inputs.policy.failed),
        changes=comparison_sentences(inputs.comparison),
        compared=inputs.comparison is not None,
        not_compared=inputs.comparison_note,
        similarity=similarity_findings(inputs.similarity),
        artifact_units=dissection_findings(inputs.concepts.dissection),
        artifact_tcav=artifact_tcav(inputs),
        counterfactuals=counterfactual_findings(inputs.counterfactuals),
    )


def labels_view(inputs: AuditInputs) -> LabelsView | None:
    """Every label's metrics and wrong calls, and the whole-set metrics (``None`` for a
    single-label model)."""
    evaluation = inputs.evaluation
    metrics = evaluation.label_metrics
    if metrics is None:
        return None
    return LabelsView(
        labels=metrics.labels,
        whole=_whole(metrics),
        mean_labels=metrics.mean_labels,
        mean_called=metrics.mean_called,
        resampled=metrics.resampled,
        resamples=evaluation.settings.bootstrap,
        precision=precision_sentence(evaluation.precision_check),
    )
