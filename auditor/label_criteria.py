"""Acceptance criteria on one named label of a multi-label model.

The policy's fixed metrics read the worst label (``multi_label.lowest_sensitivity``) or
count the labels that regressed (``compare.label_regressions``); a reviewer often needs
one label's figure instead: "nodule's sensitivity is at least 0.90", "nodule's
sensitivity has not fallen". Two families of keys name it:

- ``label.<label>.<measure>.value|ci_low|ci_high``, where ``<measure>`` is
  ``sensitivity``, ``specificity`` or ``auc`` (``metrics.json`` ``multi_label.labels``),
  ``ppv`` or ``npv`` (``label_operating``) or ``ece`` (``label_calibration``);
- ``compare.label.<label>.sensitivity|specificity.before|after|diff.value|diff.ci_low|
  diff.ci_high``: the label's rate compared with the previous audit (``comparison.json``
  ``labels``; the intervals family-wise).

A label's name may hold dots: the measure and the part are read from the right. Also
the numbers the policy derives over every label (the lowest of a measure, the highest
ECE, the miscalibrated labels).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LABEL_MEASURES",
    "NAMED_LABEL_KEYS",
    "label_calibration_numbers",
    "label_numbers",
    "lowest_of_labels",
    "missing_label",
    "named_label_meaning",
    "named_label_metric",
    "unnamed_label_reason",
]

LABEL_MEASURES = ("sensitivity", "specificity", "auc")
"""The measures the policy reads the lowest of over a multi-label model's labels."""

_MEASURES: dict[str, tuple[str, str]] = {
    "sensitivity": ("multi_label", "labels"),
    "specificity": ("multi_label", "labels"),
    "auc": ("multi_label", "labels"),
    "ppv": ("label_operating", ""),
    "npv": ("label_operating", ""),
    "ece": ("label_calibration", ""),
}
"""Each measure a ``label.*`` key may name, and where ``metrics.json`` keeps it."""

_PARTS = ("value", "ci_low", "ci_high")
_CHANGE_PARTS = ("before", "after", "diff.value", "diff.ci_low", "diff.ci_high")
_RATES = ("sensitivity", "specificity")
_CHANGE_WORDS = dict(zip(_CHANGE_PARTS, (
    "in the previous audit", "in this audit", "change", "change, lower family-wise 95% bound",
    "change, upper family-wise 95% bound",
), strict=True))  # fmt: skip


def _either(words: tuple[str, ...] | dict[str, Any]) -> str:
    return "|".join(re.escape(w) for w in words)


_NAMED = re.compile(
    rf"^label\.(?P<label>.+)\.(?P<measure>{_either(_MEASURES)})\.(?P<part>{_either(_PARTS)})$"
)
_CHANGE = re.compile(
    rf"^compare\.label\.(?P<label>.+)\.(?P<measure>{_either(_RATES)})"
    rf"\.(?P<part>{_either(_CHANGE_PARTS)})$"
)

NAMED_LABEL_KEYS = (
    f"label.<label>.{'|'.join(_MEASURES)}.{'|'.join(_PARTS)}",
    f"compare.label.<label>.{'|'.join(_RATES)}.{'|'.join(_CHANGE_PARTS)}",
)
"""The two families of keys, as the policy's error message and the README write them."""


def named_label_metric(metric: str) -> re.Match[str] | None:
    """The label, measure and part a key names, or ``None`` when it names no label."""
    return _NAMED.match(metric) or _CHANGE.match(metric)


def named_label_meaning(metric: str) -> str | None:
    """What a named-label key reads, in words (``None`` when it names no label)."""
    match = named_label_metric(metric)
    if match is None:
        return None
    label, measure, part = match.group("label", "measure", "part")
    name = "ROC AUC" if measure == "auc" else measure.upper() if len(measure) == 3 else measure
    if metric.startswith("compare."):
        return f"{label}'s {name} {_CHANGE_WORDS[part]} (comparison with the previous audit)"
    where = ".".join(p for p in _MEASURES[measure] if p)
    return f"{label}'s {name} ({part.replace('_', ' ')}; metrics.json {where})"


def _rows(metrics: dict[str, Any], key: str) -> list[dict[str, Any]]:
    found = metrics.get(key)
    if isinstance(found, dict):  # multi_label: its labels
        found = found.get("labels")
    return found if isinstance(found, list) else []


def label_numbers(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Every ``label.*`` number of a multi-label ``metrics.json`` (``None``: the label's
    measure is undefined here); empty for a single-label model."""
    found: dict[str, float | None] = {}
    for measure, (key, _) in _MEASURES.items():
        for row in _rows(metrics, key):
            estimate = row.get(measure) or {}
            for part in _PARTS:
                value = estimate.get(part)
                found[f"label.{row['label']}.{measure}.{part}"] = (
                    None if value is None else float(value)
                )
    return found


def missing_label(metric: str, metrics: dict[str, Any]) -> str:
    """Why the label a key names is not in this audit: not a multi-label model, or no
    label of that name ("" when it is there)."""
    match = named_label_metric(metric)
    if match is None:
        raise ValueError(f"{metric!r} names no label")
    labels = [row["label"] for row in _rows(metrics, "multi_label")]
    if not labels:
        return "not a multi-label model: it has no label to name"
    label = match.group("label")
    if label not in labels:
        return f"no label {label!r} in this audit (its labels: {', '.join(labels)})"
    return ""


def unnamed_label_reason(metric: str, metrics: dict[str, Any]) -> str:
    """Why a named-label key has no number in this audit: not a multi-label model, no
    label of that name, or (a comparison) the rate was not compared."""
    if why := missing_label(metric, metrics):
        return why
    match = named_label_metric(metric)
    assert match is not None  # missing_label raised otherwise
    label = match.group("label")
    if metric.startswith("compare."):
        return (
            f"{label}'s {match.group('measure')} was not compared with the previous audit: "
            "too few images with the label, or without it, in one of them (comparison.json "
            "labels_not_compared)"
        )
    return "not measured in this audit"


def lowest_of_labels(labels: dict[str, Any] | None) -> dict[str, float | None]:
    """Each label measure's lowest value over a multi-label model's labels, with that
    label's interval (``None``: not a multi-label model, or no label has the measure)."""
    found: dict[str, float | None] = {}
    for name in LABEL_MEASURES:
        rows = [r[name] for r in (labels or {}).get("labels", []) if r[name] is not None]
        lowest = min((r for r in rows if r["value"] is not None), key=lambda r: r["value"],
                     default=None)  # fmt: skip
        for part in ("value", "ci_low", "ci_high"):
            found[f"multi_label.lowest_{name}.{part}"] = lowest[part] if lowest else None
    return found


def label_calibration_numbers(rows: list[dict[str, Any]] | None) -> dict[str, float | None]:
    """The miscalibrated labels (``None``: not a multi-label model, or no label fitted)
    and the highest label ECE, with its interval (``None``: no label's ECE is defined)."""
    judged = [r for r in rows or [] if r["ece"]["value"] is not None]
    highest = max(judged, key=lambda r: r["ece"]["value"], default=None)
    found: dict[str, float | None] = {
        f"multi_label.highest_ece.{part}": highest["ece"][part] if highest else None
        for part in ("value", "ci_low", "ci_high")
    }
    fitted = [r["verdict"] for r in rows or [] if r["verdict"] != "not fitted"]
    miscalibrated = sum(v != "consistent" for v in fitted)
    found["findings.miscalibrated_labels"] = miscalibrated if fitted else None  # else: none judged
    return found
