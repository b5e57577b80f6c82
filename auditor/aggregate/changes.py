"""Changes since the previous audit, for the report: each metric before and after with the
interval of its change, McNemar's test, and whether the inputs, the predictions and the
explanations moved. The figures are ``comparison.json``'s (:mod:`auditor.compare.files`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.compare.comparison import MIN_SUBGROUP, Comparison, rate_images
from auditor.compare.drift import Shift
from auditor.compare.files import calls, findings, improvements
from auditor.compare.stats import Difference
from auditor.report.format import fixed, p_value, signed

__all__ = [
    "METRIC_NAMES",
    "ChangeRow",
    "ChangesView",
    "changes_view",
    "comparison_sentences",
    "comparison_view",
]

METRIC_NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "auc": "ROC AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "subset_accuracy": "subset accuracy",
    "label_accuracy": "label accuracy (1 − Hamming loss)",
}

SUBGROUP_ROWS = 12
"""Subgroups listed (the largest falls first)."""


@dataclass(frozen=True)
class ChangeRow:
    """One metric before and after: ``change`` is the difference with its interval;
    ``images`` what a label's rate was measured on ("" for the other rows)."""

    name: str
    before: str
    after: str
    change: str
    flag: bool
    images: str = ""


@dataclass(frozen=True)
class ChangesView:
    """The section.

    Attributes:
        previous: Which audit this one is compared with, in words.
        pairing: How the two were compared (paired on the same images, or not).
        metrics, subgroups: The rows of the two tables.
        subgroups_left: Subgroups compared but not listed.
        subgroup_rule: Which subgroups are compared, in words.
        labels: A multi-label model's label rates, one row each (empty otherwise).
        label_rule: Which label rates are compared and how, in words ("": none).
        mcnemar: McNemar's test in one sentence ("" when unpaired).
        drift: Whether the inputs, embedding, predicted classes and confidence moved.
        explanations: Each trusted method's maps' rank correlation across the audits.
        findings: The significant regressions and drift (also on page one).
        improvements: The headline metrics that rose significantly.
    """

    previous: str
    pairing: str
    metrics: tuple[ChangeRow, ...]
    subgroups: tuple[ChangeRow, ...]
    subgroups_left: int
    subgroup_rule: str
    labels: tuple[ChangeRow, ...]
    label_rule: str
    mcnemar: str
    drift: tuple[str, ...]
    explanations: tuple[str, ...]
    findings: tuple[str, ...]
    improvements: tuple[str, ...]


def _row(name: str, d: Difference) -> ChangeRow:
    interval = f"{signed(d.ci_low)} to {signed(d.ci_high)}"
    return ChangeRow(
        name, fixed(d.before), fixed(d.after), f"{signed(d.diff)} ({interval})", d.worse
    )


def _previous(comparison: Comparison) -> str:
    label, identity = comparison.old
    version = identity.get("model_version")
    same = identity["model_sha256"] == comparison.new[1]["model_sha256"]
    model = "the same model file" if same else "another model file"
    return (
        f"{label}, started {identity['started'][:16].replace('T', ' ')} UTC, of "
        f"{model}{f' (version {version})' if version else ''}: {identity['folder']}"
    )


def _pairing(comparison: Comparison) -> str:
    if comparison.paired:
        return (
            f"Paired: both audits scored the same {comparison.shared:,} images (by file "
            f"SHA-256), so each change is measured on the same images; its 95% interval "
            f"comes from a paired bootstrap."
        )
    return (
        f"Unpaired: only {comparison.shared:,} images are in both audits, so each audit is "
        f"resampled on its own for the 95% interval of the change."
    )


def _shift(label: str, shift: Shift) -> str:
    """A tested quantity in a sentence: its means, and its p-value with its test."""
    moved = "moved" if shift.moved else "did not move"
    return (
        f"{label} {moved}: {fixed(shift.before)} before, {fixed(shift.after)} now "
        f"({shift.test}, p = {p_value(shift.p_value)})."
    )


def _drift(comparison: Comparison) -> tuple[str, ...]:
    lines = []
    if comparison.intensity:
        moved = [s for s in comparison.intensity if s.moved]
        worst = min(comparison.intensity, key=lambda s: s.p_value)
        lines.append(
            f"Input intensities: {len(moved)} of {len(comparison.intensity)} per-channel "
            f"statistics moved; the most: " + _shift(worst.name.replace("_", " "), worst)
        )
    elif comparison.same_files:
        lines.append("Input intensities: not compared: both audits read the same files.")
    else:
        lines.append("Input intensities: not compared (the previous audit did not record them).")
    if comparison.embedding is not None:
        e = comparison.embedding
        state = "moved" if e.moved else "did not move"
        lines.append(
            f"Embedding: the distribution {state} (MMD² {e.statistic:.3g}, permutation "
            f"p = {p_value(e.p_value)})."
        )
    else:
        lines.append(f"Embedding: {comparison.embedding_note}.")
    classes, confidence = comparison.predictions
    if comparison.multi_label:
        lines.append(_shift(f"{classes.name.capitalize()} ({_which(classes)})", classes))
        lines.append(_shift(f"Mean {confidence.name} ({_which(confidence)})", confidence))
    else:
        lines.append(_shift(classes.name.capitalize(), classes))
        lines.append(_shift("Mean confidence", confidence))
    return tuple(lines)


def _which(shift: Shift) -> str:
    """Why a multi-label model's drift line names its label."""
    return "the label that moved most" if shift.moved else "the label closest to moving"


def _explanations(comparison: Comparison) -> tuple[str, ...]:
    rows = comparison.explanations.to_dict("records")
    return tuple(
        f"{r['method']}: median {fixed(float(r['median']), 2)} (quartiles "
        f"{fixed(float(r['low']), 2)} to {fixed(float(r['high']), 2)}) over {r['images']} images"
        for r in rows
        if r["images"]
    )


def comparison_sentences(comparison: Comparison | None) -> tuple[str, ...]:
    """The comparison's findings, for page one."""
    return tuple(findings(comparison)) if comparison is not None else ()


def changes_view(inputs: AuditInputs) -> ChangesView | None:
    """The section, when the history had an earlier audit of this model's name."""
    return comparison_view(inputs.comparison) if inputs.comparison is not None else None


def comparison_view(comparison: Comparison) -> ChangesView:
    """The comparison in the report's words (also the comparison report's body)."""
    subgroups = sorted(comparison.subgroups, key=lambda s: s[2].diff)
    return ChangesView(
        previous=_previous(comparison),
        pairing=_pairing(comparison),
        metrics=tuple(_row(METRIC_NAMES[d.name], d) for d in comparison.metrics),
        subgroups=tuple(_row(f"{c} = {v}", d) for c, v, d in subgroups[:SUBGROUP_ROWS]),
        subgroups_left=max(len(subgroups) - SUBGROUP_ROWS, 0),
        subgroup_rule=(
            f"{METRIC_NAMES[comparison.subgroup_metric].capitalize()} of every value of a "
            f"metadata column (at most 20 values) with at least {MIN_SUBGROUP} images in each "
            f"audit, the largest falls first."
        ),
        labels=tuple(_label_row(comparison, label, d) for label, d in comparison.labels),
        label_rule=_label_rule(comparison),
        mcnemar=_mcnemar(comparison),
        drift=_drift(comparison),
        explanations=_explanations(comparison),
        findings=comparison_sentences(comparison),
        improvements=tuple(improvements(comparison)),
    )


def _label_row(comparison: Comparison, label: str, d: Difference) -> ChangeRow:
    row = _row(f"{METRIC_NAMES[d.name]} of {label}", d)
    has = rate_images(d.name)
    count = f"{d.n_before:,}" if comparison.paired else f"{d.n_before:,} / {d.n_after:,}"
    return dataclasses.replace(row, images=f"{count} {has}")


def _label_rule(comparison: Comparison) -> str:
    if not comparison.multi_label:
        return ""
    scored = " (both audits scored them)" if comparison.paired else ""
    rule = (
        f"Each label's sensitivity and specificity as each audit called it, where at least "
        f"{MIN_SUBGROUP} of the images compared{scored} have the label (sensitivity) or lack "
        f"it (specificity) in each audit: {len(comparison.labels)} rates, each interval "
        f"Bonferroni-adjusted over them (a family-wise 95% CI)."
    )
    skipped = comparison.labels_skipped
    if not skipped:
        return rule
    listed = "; ".join(
        f"{METRIC_NAMES[name]} of {label} ({before:,} and {after:,} images)"
        for label, name, (before, after) in skipped[:SUBGROUP_ROWS]
    )
    more = f", and {len(skipped) - SUBGROUP_ROWS} more" if len(skipped) > SUBGROUP_ROWS else ""
    return f"{rule} Not compared, too few images: {listed}{more}."


def _mcnemar(comparison: Comparison) -> str:
    tested = comparison.mcnemar
    if tested is None:
        return ""
    return (
        f"McNemar's exact test: {calls(comparison, tested.b)} became wrong and "
        f"{tested.c:,} became right "
        f"(two-sided p = {p_value(tested.p_value)}; that more became wrong, one-sided "
        f"p = {p_value(tested.p_worse)})."
    )
