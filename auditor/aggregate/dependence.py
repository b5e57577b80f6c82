"""The metadata-dependence section, and its findings in words for the summary."""

from __future__ import annotations

import math
from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.clinical import ColumnDependence, Dependence, GroupRate
from auditor.clinical.link import ShortcutLink
from auditor.multilabel.dependence import co_label
from auditor.report.format import p_value, percent

__all__ = [
    "DependenceView",
    "dependence_findings",
    "dependence_unfound",
    "dependence_view",
    "linked",
    "subgroup_failures",
]


@dataclass(frozen=True)
class DependenceView:
    """The metadata-dependence section.

    Attributes:
        positive_class: The class a positive prediction means (``None``: a multi-label
            model, each of whose labels is compared).
        findings: Each column found, in words, then the subgroups it fails (both also in
            the summary).
        columns: Each column broken down, with its largest difference or the reason.
        rates: Every (column, true class, value) group.
        n_compared: Comparisons made (a column at a true class with two groups large
            enough).
        targets: Labels compared (a multi-label model's Bonferroni factor).
        unfound: Why no column is a finding ("" when one is).
        min_group_size, difference, alpha, permutations, seed: The settings that decide.
        binned: Columns of numbers binned into quartiles.
        skipped: ``(column, reason)`` for columns not broken down.
    """

    positive_class: str | None
    findings: tuple[str, ...]
    columns: tuple[ColumnDependence, ...]
    rates: tuple[GroupRate, ...]
    n_compared: int
    targets: int
    unfound: str
    min_group_size: int
    difference: float
    alpha: float
    permutations: int
    seed: int
    resampled: str
    rate_interval: str
    clustered: bool
    binned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def _group_rate(rate: GroupRate, positive: bool) -> str:
    """The group's share called positive (``positive``), else its share not called positive
    (a specificity at a negative true class), with its interval and counts."""
    if positive:
        value, low, high, hits = rate.rate, rate.ci_low, rate.ci_high, rate.positive
    else:
        value, low, high = 1 - rate.rate, 1 - rate.ci_high, 1 - rate.ci_low
        hits = rate.n - rate.positive
    return (
        f"{percent(value)} with {rate.column} = {rate.value} (95% CI {percent(low)}–"
        f"{percent(high)}; {hits:,} of {rate.n:,})"
    )


def _difference(c: ColumnDependence) -> str:
    return (
        f"{100 * c.difference:.1f} points more often with {c.column} = {c.high} than with "
        f"{c.column} = {c.low} (95% CI {100 * c.ci_low:.1f} to {100 * c.ci_high:.1f}; p = "
        f"{p_value(c.p_adjusted)})"
    )


def _adjustment(dependence: Dependence) -> str:
    """How the p-values were adjusted, and across what."""
    n = dependence.n_compared
    comparisons = f"{n} comparison{'s' if n != 1 else ''}"
    if not dependence.multi_label:
        return (
            f"permutation p-values adjusted (step-down min-P) across {comparisons} of a "
            "column at a true class"
        )
    t = dependence.targets
    return (
        f"permutation p-values adjusted (step-down min-P within a label, Bonferroni across "
        f"{t} label{'s' if t != 1 else ''}) across {comparisons} of a column among images "
        "with or without a label"
    )


def _sentence(dependence: Dependence, found: tuple[ColumnDependence, ...]) -> str:
    """One column's findings: the difference at each target and true class it was found
    at (the target named where it changes)."""
    verb = "called" if dependence.multi_label else "predicted"
    parts, target = [], None
    for c in found:
        assert c.label is not None
        called = f" are {verb} {c.target}" if c.target != target else ""
        parts.append(f"{dependence.images(c.label)}{called} {_difference(c)}")
        target = c.target
    adjusted = _adjustment(dependence)
    return f"Predictions depend on {found[0].column}: {', '.join(parts)}; {adjusted}."


def linked(link: ShortcutLink | None) -> str:
    """Whether a flagged shortcut's region holds more evidence for images of the
    dependence's high value than of its low value, in words ("" without a shortcut)."""
    if link is None:
        return ""
    column = link.column
    if link.too_few:
        return (
            f"Too few explained images of each value of {column} (fewer than "
            f"{link.min_images}) to tell whether the shortcut finding follows it."
        )
    verdict = (
        "The shortcut finding points to the same thing"
        if link.linked
        else f"The shortcut finding does not clearly follow {column}"
    )
    return (
        f"{verdict}: in the explained images, {link.high_share:.0%} of the evidence lies in "
        f"the {link.region} with {column} = {link.high} (n = {link.n_high}) against "
        f"{link.low_share:.0%} with {column} = {link.low} (n = {link.n_low}; one-sided "
        f"Mann-Whitney p = {p_value(link.p_value)})."
    )


def _co_labels(
    dependence: Dependence, found: tuple[ColumnDependence, ...], inputs: AuditInputs
) -> str:
    """For a multi-label model, each finding's other label whose prevalence differs
    between its two values, in words ("" when none does)."""
    sentences = []
    for c in found:
        other = co_label(
            c, inputs.evaluation.predictions, inputs.clinical.grouping, inputs.dataset.classes,
            dependence.settings,
        )  # fmt: skip
        if other is not None:
            sentences.append(
                f"Among the {dependence.images(str(c.label))}, {other.label} is present in "
                f"{other.high:.1%} with {c.column} = {c.high} (n = {other.n_high:,}) against "
                f"{other.low:.1%} with {c.column} = {c.low} (n = {other.n_low:,}): the calls "
                f"of {c.target} may follow {other.label} rather than {c.column}."
            )
    return " ".join(sentences)


def dependence_findings(
    dependence: Dependence | None, inputs: AuditInputs | None = None
) -> tuple[str, ...]:
    """Each metadata column the prediction depends on, in words with its figures, and
    (with ``inputs``) whether a shortcut finding follows the same column, or for a
    multi-label model another label whose prevalence differs with it."""
    if dependence is None:
        return ()
    sentences = []
    links = {link.column: link for link in inputs.clinical.links} if inputs is not None else {}
    for column, found in dependence.found_columns().items():
        link = linked(links.get(column))
        if inputs is not None and dependence.multi_label:
            link = _co_labels(dependence, found, inputs)
        sentences.append(_sentence(dependence, found) + (f" {link}" if link else ""))
    return tuple(sentences)


def dependence_unfound(dependence: Dependence | None, multi_label: bool) -> str:
    """Why no column is a finding, in words ("" when one is): not assessed, not judged
    (nothing large enough to compare, or too few permutations to reach the level), or
    no dependence found."""
    if dependence is None:
        needs = "metadata columns" if multi_label else "metadata columns and a positive class"
        return f"Metadata dependence not assessed: it needs {needs}."
    if dependence.findings():
        return ""
    settings = dependence.settings
    if not dependence.n_compared:
        alike = "among images alike in a label" if multi_label else "at one true class"
        why = []
        if any(c.label is None for c in dependence.columns):
            why.append(
                f"no metadata column has two values of at least "
                f"{settings.min_group_size} images {alike} (min-group-size)"
            )
        if dependence.skipped:
            n = len(dependence.skipped)
            why.append(f"{n} column{'s' if n != 1 else ''} not broken down (see the section)")
        return f"Metadata dependence not judged: {'; '.join(why)}."
    if not dependence.judged:
        t = dependence.targets
        labels = f" times the {t} label{'s' if t != 1 else ''} compared" if multi_label else ""
        least = math.ceil(dependence.targets / settings.dependence_alpha)
        return (
            f"Metadata dependence not judged: with {settings.permutations:,} permutations"
            f"{labels}, no adjusted p-value can be below {dependence.p_floor:.3g}, above "
            f"dependence-alpha ({settings.dependence_alpha:g}); set permutations to at least "
            f"{least:,}."
        )
    changed = (
        "the calls of a label among images alike in that label"
        if multi_label
        else "the predictions at a given true class"
    )
    n = dependence.n_compared
    return f"No metadata column changes {changed} ({n} comparison{'s' if n != 1 else ''} made)."


def _failure(dependence: Dependence, c: ColumnDependence) -> str:
    """A finding as the subgroup it fails: the value with the lower sensitivity (when the
    true class is the positive class) or specificity (otherwise)."""
    assert c.label is not None and c.high is not None and c.low is not None
    positive = dependence.has_target(c)
    worse, better = (c.low, c.high) if positive else (c.high, c.low)
    measure = "sensitivity" if positive else "specificity"
    of = f" for {c.target}" if dependence.multi_label else ""
    return (
        f"{measure}{of} falls to "
        f"{_group_rate(dependence.rate(c.column, c.label, worse), positive)}, against "
        f"{_group_rate(dependence.rate(c.column, c.label, better), positive)} "
        f"({dependence.images(c.label)})"
    )


def subgroup_failures(dependence: Dependence | None) -> tuple[str, ...]:
    """Each column the prediction depends on as the subgroups it fails, one per true
    class found, with both values' rates, intervals and counts."""
    if dependence is None:
        return ()
    sentences = []
    for found in dependence.found_columns().values():
        failures = "; ".join(_failure(dependence, c) for c in found)
        sentences.append(f"{failures[0].upper()}{failures[1:]}.")
    return tuple(sentences)


def dependence_view(inputs: AuditInputs) -> DependenceView | None:
    """The section, or ``None`` without a positive class (a single-label model's) or
    metadata columns."""
    dependence = inputs.clinical.dependence
    if dependence is None:
        return None
    settings = dependence.settings
    return DependenceView(
        positive_class=dependence.positive_class,
        findings=dependence_findings(dependence, inputs) + subgroup_failures(dependence),
        columns=dependence.columns,
        rates=dependence.rates,
        n_compared=dependence.n_compared,
        targets=dependence.targets,
        unfound=dependence_unfound(dependence, dependence.multi_label),
        min_group_size=settings.min_group_size,
        difference=settings.dependence_difference,
        alpha=settings.dependence_alpha,
        permutations=settings.permutations,
        seed=settings.seed,
        resampled=inputs.clinical.resampling.describe(),
        rate_interval=inputs.clinical.resampling.rate_interval,
        clustered=inputs.clinical.resampling.codes is not None,
        binned=dependence.binned,
        skipped=dependence.skipped,
    )
