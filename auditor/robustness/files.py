"""The robustness suite in the run folder: ``robustness.csv``, ``robustness_predictions.csv``,
a multi-label model's ``robustness_labels.csv`` and ``metrics.json``'s ``robustness``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditor.metrics import Estimate
from auditor.robustness.analysis import Robustness

__all__ = ["robustness_document", "robustness_frame", "robustness_label_frame"]

_CHANGES = ("accuracy_change", "sensitivity_change", "specificity_change", "flips",
            "confidence_change")  # fmt: skip


def _estimate(name: str, value: Estimate | None) -> dict[str, float | None]:
    if value is None:
        return {name: None, f"{name}_ci_low": None, f"{name}_ci_high": None}
    return {name: value.value, f"{name}_ci_low": value.ci_low, f"{name}_ci_high": value.ci_high}


def robustness_frame(robustness: Robustness) -> pd.DataFrame:
    """``robustness.csv``: one row per perturbation and severity: images, the perturbed
    accuracy, each change with its paired 95% interval (``<name>``, ``<name>_ci_low``,
    ``<name>_ci_high``; sensitivity and specificity empty without a positive class), the
    images whose call turned wrong per measure (``<measure>_worse``) and ``fragile`` (the
    measures that fell, ``;``-separated)."""
    rows = []
    for row in robustness.rows:
        record: dict[str, Any] = {
            "perturbation": row.perturbation,
            "severity": row.severity,
            "level": row.level,
            "n": row.n,
            "accuracy": row.accuracy,
        }
        for name in _CHANGES:
            record |= _estimate(name, getattr(row, name))
        record |= dict(zip(("accuracy_worse", "sensitivity_worse", "specificity_worse"),
                           row.worse, strict=True))  # fmt: skip
        record["fragile"] = ";".join(row.fragile)
        rows.append(record)
    return pd.DataFrame(rows)


def robustness_label_frame(robustness: Robustness) -> pd.DataFrame:
    """``robustness_labels.csv`` (a multi-label model): one row per perturbation,
    severity and label: each label's sensitivity and specificity change with its paired
    95% interval, and the images whose call of it turned wrong."""
    rows = []
    for row in robustness.rows:
        for change in row.labels:
            record: dict[str, Any] = {
                "perturbation": row.perturbation, "severity": row.severity,
                "label": change.label,
            }  # fmt: skip
            record |= _estimate("sensitivity_change", change.sensitivity_change)
            record |= _estimate("specificity_change", change.specificity_change)
            record["sensitivity_worse"], record["specificity_worse"] = change.worse
            rows.append(record)
    columns = ["perturbation", "severity", "label", *(
        f"{name}{end}" for name in ("sensitivity_change", "specificity_change")
        for end in ("", "_ci_low", "_ci_high")
    ), "sensitivity_worse", "specificity_worse"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def robustness_document(robustness: Robustness | None) -> dict[str, Any] | None:
    """``metrics.json``'s ``robustness`` (``None`` when the suite was switched off)."""
    if robustness is None:
        return None
    settings = robustness.settings
    return {
        "images": robustness.images,
        "unreadable": robustness.unreadable,
        "clean_accuracy": robustness.clean_accuracy,
        "positive_class": robustness.positive_class,
        "threshold": robustness.threshold,
        "fragile_drop": settings.fragile_drop,
        "min_images": robustness.min_images,
        "resamples": robustness.resamples,
        "resampled": robustness.resampled,
        "rows": robustness_frame(robustness).to_dict(orient="records"),
        "labels": robustness_label_frame(robustness).to_dict(orient="records"),
        "fragile": [
            {
                "perturbation": row.perturbation,
                "severity": row.severity,
                "measures": list(row.fragile),
            }
            for row in robustness.fragile()
        ],
    }
