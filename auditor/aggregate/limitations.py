"""The limitations section: what this audit cannot say, given its settings and data."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs

__all__ = ["FEW_IMAGES", "LimitationsView", "limitations_view"]

FEW_IMAGES = 30
"""A class with fewer images than this is called imprecise."""


@dataclass(frozen=True)
class LimitationsView:
    """One sentence per limitation."""

    items: tuple[str, ...]


def _trust_caveat(inputs: AuditInputs) -> str:
    settings = inputs.trust.settings
    return (
        "The trust checks judge each method on this model and these images only; the "
        f"randomisation and stability checks use {settings.trust_images} images at most, and "
        "their pass marks (rank correlation "
        f"{settings.randomisation_threshold:g}, max-sensitivity "
        f"{settings.sensitivity_threshold:g}) are conventions, not guarantees. A map that "
        "passes shows where the score is sensitive, not why."
    )


def _clinical_caveats(inputs: AuditInputs) -> list[str]:
    clinical = inputs.clinical
    if clinical.positive_class is None:
        return [
            "The model has more than two classes and no positive-class was declared, so it "
            "was not read as a test: no operating point, fairness or metadata-dependence "
            "analysis. Declare positive-class to have them."
        ]
    operating = clinical.operating
    if operating is not None and operating.chosen_for:
        return [
            f"The threshold was chosen on the audited data to reach {operating.chosen_for}; "
            "the sensitivity and specificity at it are optimistic for new data."
        ]
    return []


def _false_findings(inputs: AuditInputs) -> str:
    clinical, trust = inputs.clinical.settings, inputs.trust.settings
    return (
        "Findings can be false alarms. Each needs a minimum of images behind it "
        f"({clinical.min_group_size} per group for metadata dependence and for the images "
        f"whose call a perturbation turned wrong, min-group-size; {trust.shortcut_min_images} "
        "explained images for a shortcut, shortcut-min-images), and its interval resamples "
        "images (or patients), never maps. The metadata-dependence test bounds its chance of "
        f"any false finding at {clinical.dependence_alpha:g} (Holm). In Auditor's test suite, "
        "a clean model on data with no planted flaw gave no finding of any kind (dependence, "
        "shortcut, fragility) in at least 19 of 20 seeded audits."
    )


def _independence_caveat(inputs: AuditInputs) -> str:
    resampling = inputs.clinical.resampling
    if resampling.codes is None:
        return (
            "Confidence intervals treat images as independent (percentile bootstrap and "
            "Wilson intervals over images); several images of one patient make them too "
            "narrow. Declare patient-column to resample patients instead."
        )
    return (
        f"Confidence intervals resample {resampling.describe()}, not images (a rate's "
        "interval is never narrower than Wilson's over images). The metadata-dependence "
        "permutation test, the calibration slope's interval and curve, the accuracy per "
        "value shown without a positive class and the explanation checks' intervals still "
        "treat images (or maps) as independent."
    )


def limitations_view(inputs: AuditInputs) -> LimitationsView:
    """The standing caveats, then those this data and model add."""
    data, evaluation = inputs.dataset, inputs.evaluation
    items = [
        _trust_caveat(inputs),
        "Metrics describe this validation set only; they transfer to other sites, devices or "
        "populations only as far as this set represents them.",
        _independence_caveat(inputs),
        _false_findings(inputs),
    ]
    if not data.metadata_columns:
        items.append("The data has no metadata columns, so no subgroup analysis was possible.")
    items.extend(_clinical_caveats(inputs))
    if min(c.support for c in evaluation.metrics.per_class) < FEW_IMAGES:
        items.append(
            f"At least one class has fewer than {FEW_IMAGES} images; its metrics are imprecise."
        )
    if not data.has_masks:
        items.append(
            "The data has no region-of-interest masks, so the explanations' localisation and "
            "the shortcut finding could not be measured."
        )
    if inputs.explanations.layer is None:
        items.append(
            "The model has no 4-D layer output with spatial extent, so Grad-CAM could not run."
        )
    if len(evaluation.excluded):
        items.append(f"{len(evaluation.excluded)} file(s) were excluded and are not in any metric.")
    return LimitationsView(tuple(items))
