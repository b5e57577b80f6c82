"""A comparison in words and in ``comparison.json``, and the numbers the policy reads.

Each finding is one sentence with its figures, read from the same :class:`Comparison`
that ``comparison.json`` is written from, so a reader can recompute it from the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from auditor.compare.comparison import COMPARED, Comparison, rate_images
from auditor.compare.drift import Shift
from auditor.compare.stats import Difference
from auditor.report.format import fixed, p_value, percent, signed

__all__ = [
    "COMPARISON_SCHEMA_VERSION",
    "calls",
    "comparison_document",
    "findings",
    "gate_values",
    "improvements",
]

COMPARISON_SCHEMA_VERSION = 3
"""2: a multi-label model's comparison (``multi_label``, ``labels``,
``labels_not_compared``)."""

_NAMES = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "The ROC AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "subset_accuracy": "Subset accuracy",
    "label_accuracy": "Label accuracy (1 − Hamming loss)",
}


def _change(d: Difference, interval: str = "95% CI") -> str:
    return (
        f"{fixed(d.before)} to {fixed(d.after)} ({signed(d.diff)}, {interval} "
        f"{signed(d.ci_low)} to {signed(d.ci_high)})"
    )


def _on(comparison: Comparison) -> str:
    if comparison.paired:
        return f"on the {comparison.shared:,} images both audits scored"
    return "on different images (unpaired)"


def calls(comparison: Comparison, count: int | None = None) -> str:
    """What McNemar's test counts (calls, or a multi-label model's whole sets of labels),
    with ``count`` before it when given."""
    if comparison.multi_label:
        what = "image's set of labels" if count == 1 else "images' sets of labels"
    else:
        what = "call" if count == 1 else "calls"
    return what if count is None else f"{count:,} {what}"


def _metric_findings(comparison: Comparison) -> list[str]:
    sentences = []
    for d in comparison.metrics:
        if d.worse:
            sentences.append(
                f"{_NAMES[d.name]} fell from {_change(d)} since the previous audit, "
                f"{_on(comparison)}."
            )
    sentences += _label_findings(comparison)
    fell = sorted((d.diff, c, v, d) for c, v, d in comparison.subgroup_regressions)
    if fell:
        _, column, value, d = fell[0]
        sentences.append(
            f"{_NAMES[comparison.subgroup_metric]} fell in {len(fell)} of the "
            f"{len(comparison.subgroups)} subgroups compared (intervals Bonferroni-adjusted "
            f"over them); the most for {column} = {value}, from {_change(d)}."
        )
    tested = comparison.mcnemar
    if tested is not None and tested.p_worse < comparison.alpha:
        sentences.append(
            f"More {calls(comparison)} became wrong than right on the {comparison.shared:,} "
            f"images both audits scored: {tested.b:,} against {tested.c:,} (McNemar's exact test, "
            f"one-sided p = {p_value(tested.p_worse)})."
        )
    return sentences


def _label_findings(comparison: Comparison) -> list[str]:
    """A multi-label model's label rates that fell, the largest falls first."""
    fell = sorted(comparison.label_regressions, key=lambda r: r[1].diff)
    return [
        f"{_NAMES[d.name]} for {label} fell from {_change(d, 'family-wise 95% CI')} since the "
        f"previous audit, {label_images(comparison, label, d)}; the intervals are "
        f"Bonferroni-adjusted over the {len(comparison.labels)} label rates compared."
        for label, d in fell
    ]


def label_images(comparison: Comparison, label: str, d: Difference) -> str:
    """The images a label's rate was measured on, in words."""
    has = rate_images(d.name)
    if comparison.paired:
        return f"on the {d.n_before:,} images {has} {label} both audits scored"
    return f"on {d.n_before:,} and {d.n_after:,} images {has} {label} (unpaired)"


def improvements(comparison: Comparison) -> list[str]:
    """The headline metrics whose whole interval of change is above zero."""
    return [
        f"{_NAMES[d.name]} rose from {_change(d)}, {_on(comparison)}."
        for d in comparison.metrics
        if d.better
    ]


def _drift_findings(comparison: Comparison) -> list[str]:
    sentences = []
    moved = sorted((s for s in comparison.intensity if s.moved), key=lambda s: s.p_value)
    if moved:
        listed = "; ".join(
            f"{s.name.replace('_', ' ')} {fixed(s.before)} → {fixed(s.after)} "
            f"(D = {fixed(s.statistic, 2)}; {s.test}, p = {p_value(s.p_value)})"
            for s in moved[:3]
        )
        sentences.append(f"The input images changed: {listed}.")
    if comparison.embedding is not None and comparison.embedding.moved:
        e = comparison.embedding
        sentences.append(
            f"The embedding's distribution moved (MMD² {e.statistic:.3g}, permutation "
            f"p = {p_value(e.p_value)})."
        )
    return sentences + _prediction_findings(comparison)


def _prediction_findings(comparison: Comparison) -> list[str]:
    classes, confidence = comparison.predictions
    sentences = []
    if classes.moved and comparison.multi_label:
        sentences.append(
            f"The calls moved: {classes.name.removeprefix('share called ')} was called on "
            f"{percent(classes.after)} of images, against {percent(classes.before)} before "
            f"({classes.test}, p = {p_value(classes.p_value)})."
        )
    elif classes.moved:
        called = classes.name.removeprefix("share called ")
        sentences.append(
            f"The predicted classes moved: {called}, the class whose share changed most, was "
            f"called for {percent(classes.after)} of images, against {percent(classes.before)} "
            f"before ({classes.test}, p = {p_value(classes.p_value)})."
        )
    if confidence.moved:
        what = confidence.name if comparison.paired else f"distribution of the {confidence.name}"
        sentences.append(
            f"The {what} moved ({confidence.test}, p = {p_value(confidence.p_value)}; mean "
            f"{fixed(confidence.after)}, against {fixed(confidence.before)} before)."
        )
    return sentences


def findings(comparison: Comparison) -> list[str]:
    """Every significant change, one sentence each with its figures."""
    return _metric_findings(comparison) + _drift_findings(comparison)


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _shift(shift: Shift) -> dict[str, Any]:
    return {k: _number(v) for k, v in asdict(shift).items()}


def _difference(d: Difference) -> dict[str, Any]:
    return {k: _number(v) for k, v in asdict(d).items()} | {"worse": d.worse}


def comparison_document(comparison: Comparison) -> dict[str, Any]:
    """The content of ``comparison.json``."""
    return {
        "schema_version": COMPARISON_SCHEMA_VERSION,
        "old": {"label": comparison.old[0], **comparison.old[1]},
        "new": {"label": comparison.new[0], **comparison.new[1]},
        "paired": comparison.paired,
        "same_files": comparison.same_files,
        "shared_images": comparison.shared,
        "alpha": comparison.alpha,
        "metrics": [_difference(d) for d in comparison.metrics],
        "multi_label": comparison.multi_label,
        "subgroups": [
            {"column": c, "value": v, **_difference(d)} for c, v, d in comparison.subgroups
        ],
        "labels": [{"label": label, **_difference(d)} for label, d in comparison.labels],
        "labels_not_compared": [
            {"label": label, "name": name, "n_before": before, "n_after": after}
            for label, name, (before, after) in comparison.labels_skipped
        ],
        "mcnemar": asdict(comparison.mcnemar) if comparison.mcnemar is not None else None,
        "drift": {
            "intensity": [_shift(s) for s in comparison.intensity],
            "embedding": _shift(comparison.embedding) if comparison.embedding else None,
            "embedding_note": comparison.embedding_note,
            "predictions": [_shift(s) for s in comparison.predictions],
        },
        "explanations": [
            {k: _number(v) for k, v in row.items()}
            for row in comparison.explanations.to_dict("records")
        ],
        "findings": findings(comparison),
        "improvements": improvements(comparison),
        "gate": gate_values(comparison),
    }


def _gate_parts(key: str, d: Difference) -> dict[str, float | None]:
    """A difference's five numbers, under ``key``."""
    parts = {"before": d.before, "after": d.after, "diff.value": d.diff,
             "diff.ci_low": d.ci_low, "diff.ci_high": d.ci_high}  # fmt: skip
    return {f"{key}.{part}": _number(float(value)) for part, value in parts.items()}


def gate_values(comparison: Comparison | None) -> dict[str, float | None]:
    """Every :data:`COMPARED` number (``None`` when not measured or when there is no
    previous audit), and each compared label rate's
    (``compare.label.<label>.<rate>.*``, :mod:`auditor.label_criteria`)."""
    values: dict[str, float | None] = dict.fromkeys(COMPARED)
    if comparison is None:
        return values
    for d in comparison.metrics:
        values |= _gate_parts(f"compare.{d.name}", d)
    if comparison.mcnemar is not None:
        values["compare.mcnemar.p_value"] = comparison.mcnemar.p_value
        values["compare.mcnemar.p_worse"] = comparison.mcnemar.p_worse
    if comparison.intensity:
        values["compare.drift.intensity.p_value"] = min(s.p_value for s in comparison.intensity)
    elif comparison.same_files:  # the same files: nothing to test, nothing moved
        values["compare.drift.intensity.p_value"] = 1.0
    if comparison.embedding is not None:
        values["compare.drift.embedding.p_value"] = comparison.embedding.p_value
    for shift, key in zip(comparison.predictions, ("predictions", "confidence"), strict=True):
        values[f"compare.drift.{key}.p_value"] = shift.p_value
    for label, d in comparison.labels:
        values |= _gate_parts(f"compare.label.{label}.{d.name}", d)
    values["compare.regressions"] = len(comparison.regressions)
    values["compare.subgroup_regressions"] = len(comparison.subgroup_regressions)
    values["compare.label_regressions"] = len(comparison.label_regressions)
    values["compare.findings"] = len(findings(comparison))
    return values
