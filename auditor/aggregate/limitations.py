"""The limitations section: what this audit's findings and its settings and data limit,
each with a mitigation. The findings' limitations come first."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.counterfactuals import counterfactual_artifacts
from auditor.aggregate.datasheet import duplicates_sentence
from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.similarity import similarity_limitation
from auditor.aggregate.trust import trust_summary
from auditor.multilabel.calibration import miscalibrated

__all__ = ["FEW_IMAGES", "Limitation", "LimitationsView", "limitations_view"]

FEW_IMAGES = 30
"""A class with fewer images than this is called imprecise."""


@dataclass(frozen=True)
class Limitation:
    """What limits the model or the audit, and what to do about it.

    Attributes:
        finding: Whether it comes from one of this audit's findings (else a standing
            caveat of the method or of this data).
    """

    text: str
    mitigation: str
    finding: bool = False


@dataclass(frozen=True)
class LimitationsView:
    """The findings' limitations, then the caveats."""

    items: tuple[Limitation, ...]


def _trust_caveat(inputs: AuditInputs) -> str:
    settings = inputs.trust.settings
    return (
        "The trust checks judge each method on this model and these images only (at most "
        f"{settings.trust_images} images for randomisation and stability, whose pass marks, "
        f"rank correlation {settings.randomisation_threshold:g} and map instability "
        f"{settings.instability_threshold:g}, are conventions). A map that passes shows where "
        "the score responds to the pixels, not why."
    )


def _clinical_caveats(inputs: AuditInputs) -> list[Limitation]:
    clinical = inputs.clinical
    if inputs.dataset.multi_label:  # each label a test at its declared threshold
        return []
    if clinical.positive_class is None:
        return [
            Limitation(
                "The model has more than two classes and no positive-class was declared, so "
                "it was not read as a test: no operating point, fairness or "
                "metadata-dependence analysis.",
                "Declare positive-class to have them.",
            )
        ]
    operating = clinical.operating
    if operating is not None and operating.chosen_for:
        return [
            Limitation(
                f"The threshold was chosen on the audited data to reach "
                f"{operating.chosen_for}; the sensitivity and specificity at it are "
                "optimistic for new data.",
                "Fix the threshold before the audit (threshold) and confirm it on new data.",
            )
        ]
    return []


def _false_findings(inputs: AuditInputs) -> str:
    clinical, trust = inputs.clinical.settings, inputs.trust.settings
    adjusted = "step-down min-P" + (
        ", Bonferroni across labels" if inputs.dataset.multi_label else ""
    )
    return (
        f"Findings can be false alarms. Each needs {clinical.min_group_size} images per group "
        f"(min-group-size) or {trust.shortcut_min_images} explained images for a shortcut "
        "(shortcut-min-images), its interval resamples images (or patients), and metadata "
        f"dependence bounds its chance of any false finding at {clinical.dependence_alpha:g} "
        f"({adjusted}). In Auditor's test suite a clean model on unflawed data gave no finding "
        "(dependence, shortcut, fragility, embedding) in at least 19 of 20 seeded audits."
    )


def _independence_caveat(inputs: AuditInputs) -> str:
    resampling = inputs.clinical.resampling
    if resampling.codes is None:
        return (
            "Confidence intervals treat images as independent; several images of one "
            "patient make them too narrow."
        )
    return (
        f"Confidence intervals resample {resampling.describe()}, not images (a rate's "
        "interval is never narrower than Wilson's over images). The metadata-dependence "
        "permutation test, the calibration slope's interval and curve, the accuracy per "
        "value shown without a positive class and the explanation checks' intervals still "
        "treat images (or maps) as independent."
    )


def _found(text: str, mitigation: str) -> Limitation:
    return Limitation(text, mitigation, finding=True)


def _model_findings(inputs: AuditInputs) -> list[Limitation]:
    """What the model relies on or breaks under: dependence, shortcut, fragility."""
    found = []
    dependence = inputs.clinical.dependence
    for column, at in (dependence.found_columns() if dependence is not None else {}).items():
        assert dependence is not None
        if dependence.multi_label:
            alike = "among images alike in that label"
            points = ", ".join(
                f"{100 * c.difference:.1f} points for {c.target} among "
                f"{dependence.images(str(c.label))}"
                for c in at
            )
        else:
            alike = "at the same true class"
            points = ", ".join(f"{100 * c.difference:.1f} points at {c.label}" for c in at)
        found.append(
            _found(
                f"The model's calls depend on {column} {alike} ({points}; see Metadata "
                "dependence).",
                f"State images whose {column} differs from the training data's as out of scope, "
                f"or retrain on data where {column} is balanced across the classes (or the "
                "artefact is removed), then audit again.",
            )
        )
    if (shortcuts := inputs.trust.shortcuts) is not None and shortcuts.flagged:
        found.append(
            _found(
                "The model's evidence lies outside the region of interest for "
                f"{', '.join(g.label for g in shortcuts.flagged)} (see Explanation trust): it may "
                "rely on an artefact.",
                "Look for markers, rulers, text or borders in that part of the images; crop or "
                "mask them in preprocessing, or retrain without them, then audit again.",
            )
        )
    if inputs.robustness is not None and (fragile := inputs.robustness.fragile()):
        found.append(
            _found(
                f"The calls change when images are degraded: {len(fragile)} perturbation(s) are "
                "fragile (see Robustness).",
                "Gate image quality at acquisition (reject noisy, blurred or heavily compressed "
                "images), or retrain with these perturbations as augmentation; declare the "
                "severities seen in practice in [robustness] and audit again.",
            )
        )
    return found  # fmt: skip


def _calibration_findings(inputs: AuditInputs) -> list[Limitation]:
    """The over-confident probabilities: the positive class's, or a multi-label model's
    labels'."""
    found = []
    calibration = inputs.clinical.calibration
    if calibration is not None and calibration.slope[2] < 1:
        found.append(
            _found(
                f"The probability of {calibration.positive_class} is over-confident (calibration "
                f"slope {calibration.slope[0]:.2f}).",
                "Do not show the probabilities to users as risks; recalibrate them (logistic or "
                "temperature scaling) on held-out data first.",
            )
        )
    flagged = miscalibrated(inputs.clinical.label_calibration)
    for verdict, mitigation in _LABEL_MITIGATIONS.items():
        if labels := [c for c in flagged if c.verdict == verdict and c.fit]:
            slopes = ", ".join(f"{c.label} {c.fit.slope[0]:.2f}" for c in labels[:3] if c.fit)
            more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
            found.append(
                _found(
                    f"The probabilities of {len(labels)} label(s) are {verdict} (calibration "
                    f"slopes: {slopes}{more}; see Calibration per label).",
                    mitigation,
                )
            )
    return found


_LABEL_MITIGATIONS = {
    "inverted": "Do not use these labels' probabilities or calls: they fall as the label "
    "becomes likelier; check the model's label order and training targets first.",
    "over-confident": "Do not show these labels' probabilities to users as risks; recalibrate "
    "each (logistic or temperature scaling per label) on held-out data first.",
}
"""What to do about a multi-label model's labels of each verdict that limits their use."""


def _use_findings(inputs: AuditInputs) -> list[Limitation]:
    """What limits the use of its outputs: unreadable maps, calibration, the policy."""
    found = []
    if flagged := trust_summary(inputs.trust).flagged:
        found.append(
            _found(
                f"The maps of {', '.join(flagged)} do not depend on the model's weights "
                "(randomisation check).",
                "Do not use these maps to explain or justify the model's calls; use the methods "
                "that can be read.",
            )
        )
    found.extend(_calibration_findings(inputs))
    if copies := duplicates_sentence(inputs.evaluation.predictions):
        found.append(
            _found(
                f"{copies} (see Data set)",
                "Remove the copies (keep one per group, with its correct label), then audit again.",
            )
        )
    for concept, removed, shown in counterfactual_artifacts(inputs.counterfactuals):
        found.append(
            _found(
                f"Removing {concept} changes the call of {removed} of {shown} misclassified "
                "images that show it (see What would change the call).",
                "Mask the artefact in preprocessing, or retrain without it, and audit again.",
            )
        )
    if similar := similarity_limitation(inputs.similarity):
        found.append(
            _found(
                f"{similar} (see What the model sees as similar)",
                "Remove duplicates and leaked images, balance what the embedding groups by, and "
                "audit again.",
            )
        )
    if inputs.policy.failed:
        found.append(
            _found(
                f"{len(inputs.policy.failed)} acceptance criteria are not met (see Acceptance "
                "criteria).",
                "Under the declared policy the model is not to be released until they are met.",
            )
        )
    return found  # fmt: skip


def _caveats(inputs: AuditInputs) -> list[Limitation]:
    """The standing caveats of the method, with their mitigations."""
    return [
        Limitation(_trust_caveat(inputs), "Read a map as where the score responds; confirm "
                   "a suspected cause by changing the image (robustness, counterfactuals)."),
        Limitation("Metrics describe this validation set only; they transfer to other sites, "
                   "devices or populations only as far as this set represents them.",
                   "Audit the model again on data from each site and device it is used at."),
        Limitation(_independence_caveat(inputs), "Declare patient-column when a patient "
                   "contributes several images."),
        Limitation(_false_findings(inputs), "Confirm a finding on new data before acting on "
                   "it alone."),
    ]  # fmt: skip


def _data_caveats(inputs: AuditInputs) -> list[Limitation]:
    """What this data set and model leave unmeasured."""
    data, evaluation = inputs.dataset, inputs.evaluation
    items = []
    if not data.metadata_columns:
        items.append(
            Limitation(
                "The data has no metadata columns, so no subgroup analysis was possible.",
                "Add the patients' and acquisition's "
                "attributes (sex, age, site, device) as manifest columns.",
            )
        )
    items.extend(_clinical_caveats(inputs))
    if min(n for _, n in evaluation.class_counts) < FEW_IMAGES:
        items.append(
            Limitation(
                f"At least one {'label' if data.multi_label else 'class'} has fewer than "
                f"{FEW_IMAGES} images; its metrics are imprecise.",
                f"Add images of that {'label' if data.multi_label else 'class'}.",
            )
        )
    if not data.has_masks:
        items.append(
            Limitation(
                "The data has no region-of-interest masks, so the "
                "explanations' localisation and the shortcut finding could "
                "not be measured.",
                "Add a mask column to the manifest.",
            )
        )
    if inputs.explanations.layer is None:
        items.append(
            Limitation(
                "The model has no 4-D layer output with spatial extent, so Grad-CAM could not run.",
                "Use the gradient methods.",
            )
        )
    if len(evaluation.excluded):
        items.append(
            Limitation(
                f"{len(evaluation.excluded)} file(s) were excluded and are not in any metric.",
                "Repair or remove them (see Excluded files) and audit again.",
            )
        )
    return items  # fmt: skip


def limitations_view(inputs: AuditInputs) -> LimitationsView:
    """The findings' limitations, then the standing caveats and those of this data."""
    return LimitationsView(
        tuple(
            _model_findings(inputs)
            + _use_findings(inputs)
            + _caveats(inputs)
            + _data_caveats(inputs)
        )
    )
