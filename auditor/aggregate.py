"""Aggregate stage: turn the stages' outputs into the records the report shows.

The report template sees only :class:`ReportData` (numbers, strings, data-URI
figures); it never sees the model. Figures are drawn here from those records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from auditor.architecture import ArchitectureProfile, LayerInfo
from auditor.config import AuditConfig
from auditor.data import Dataset
from auditor.evaluate import Evaluation
from auditor.explain import METHODS
from auditor.explain.engine import Explanations
from auditor.images import Preprocessing
from auditor.measure import Trust
from auditor.metrics import ClassMetrics
from auditor.report.cases import (
    CaseView,
    FeatureRow,
    MethodView,
    case_views,
    feature_rows,
    method_views,
)
from auditor.report.figures import (
    calibration_figure,
    colorbar_figure,
    confusion_figure,
    filter_grid,
)
from auditor.report.trust import TrustView, trust_view

__all__ = [
    "CaseView",
    "MethodView",
    "ReportData",
    "SubgroupRow",
    "build_report_data",
    "subgroup_table",
    "wilson_interval",
]

_MAX_SUBGROUP_VALUES = 20
_TABLE_DEPTH = 2


@dataclass(frozen=True)
class SubgroupRow:
    column: str
    value: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class ReportData:
    """Everything the report template shows."""

    title: str
    created: str
    auditor_version: str
    model_name: str
    model_sha256: str
    output_kind: str
    config: AuditConfig
    config_rows: tuple[tuple[str, str, str], ...]
    dataset: Dataset
    preprocessing: Preprocessing
    class_support: tuple[tuple[str, int], ...]
    data_sha256: str
    evaluation: Evaluation
    worst_classes: tuple[ClassMetrics, ...]
    architecture: ArchitectureProfile
    layers_shown: tuple[LayerInfo, ...]
    target_layer: str | None
    confusion_figure: str
    calibration_figure: str
    colorbar_figure: str
    subgroups: tuple[SubgroupRow, ...]
    methods: tuple[MethodView, ...]
    not_applicable: tuple[tuple[str, str], ...]
    batch_sizes: dict[str, int]
    shared_seconds: float
    filters_figure: str
    n_filters: int
    feature_rows: tuple[FeatureRow, ...]
    trust: TrustView
    misclassified: tuple[CaseView, ...]
    n_errors: int
    sampled: tuple[CaseView, ...]
    excluded: tuple[tuple[str, str], ...]
    limitations: tuple[str, ...]
    command: str
    versions: tuple[tuple[str, str], ...]
    device_name: str
    started: str
    finished: str


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for a proportion (better than the normal one for small n)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def subgroup_table(predictions: pd.DataFrame, columns: tuple[str, ...]) -> tuple[SubgroupRow, ...]:
    """Accuracy per value of each metadata column with at most 20 distinct values."""
    rows: list[SubgroupRow] = []
    for column in columns:
        values = predictions[column].fillna("")
        if values.nunique() > _MAX_SUBGROUP_VALUES:
            continue
        grouped = predictions.groupby(values, sort=True)["correct"].agg(["sum", "count"])
        for value, (hits, count) in grouped.iterrows():
            low, high = wilson_interval(int(hits), int(count))
            rows.append(
                SubgroupRow(column, str(value) or "(empty)", int(count), hits / count, low, high)
            )
    return tuple(rows)


def _shared_seconds(explanations: Explanations) -> float:
    """Seconds per explained case of the gradient passes the gradient methods share."""
    n_cases = len(explanations.records.drop_duplicates(["index", "role"]))
    return explanations.seconds.get("gradient passes", 0.0) / n_cases if n_cases else 0.0


def _limitations(
    data: Dataset, evaluation: Evaluation, layer: str | None, trust: Trust
) -> tuple[str, ...]:
    settings = trust.settings
    items = [
        "The trust checks judge each method on this model and these images only; the "
        f"randomisation and stability checks use {settings.trust_images} images at most, and "
        "their pass marks (rank correlation "
        f"{settings.randomisation_threshold:g}, max-sensitivity "
        f"{settings.sensitivity_threshold:g}) are conventions, not guarantees. A map that "
        "passes shows where the score is sensitive, not why.",
        "Metrics describe this validation set only; they transfer to other sites, devices or "
        "populations only as far as this set represents them.",
        "Confidence intervals are percentile bootstrap intervals over images; they do not "
        "account for correlated images (for example several images of one patient).",
    ]
    if not data.metadata_columns:
        items.append("The data has no metadata columns, so no subgroup analysis was possible.")
    if min(c.support for c in evaluation.metrics.per_class) < 30:
        items.append("At least one class has fewer than 30 images; its metrics are imprecise.")
    if not data.has_masks:
        items.append(
            "The data has no region-of-interest masks, so the explanations' localisation and "
            "the shortcut finding could not be measured."
        )
    if layer is None:
        items.append(
            "The model has no 4-D layer output with spatial extent, so Grad-CAM could not run."
        )
    if len(evaluation.excluded):
        items.append(f"{len(evaluation.excluded)} file(s) were excluded and are not in any metric.")
    return tuple(items)


def build_report_data(
    *,
    config: AuditConfig,
    dataset: Dataset,
    preprocessing: Preprocessing,
    evaluation: Evaluation,
    architecture: ArchitectureProfile,
    explanations: Explanations,
    trust: Trust,
    sampled: tuple[int, ...],
    misclassified: tuple[int, ...],
    n_errors: int,
    command: str,
    versions: tuple[tuple[str, str], ...],
    device_name: str,
    started: str,
    finished: str,
    auditor_version: str,
) -> ReportData:
    """Collect the records and draw the figures of one report."""
    metrics = evaluation.metrics
    ranked = sorted(
        (c for c in metrics.per_class if c.support > 0),
        key=lambda c: (c.sensitivity if not math.isnan(c.sensitivity) else -1.0, c.name),
    )
    layers_shown = tuple(
        layer for layer in architecture.layers if layer.path.count(".") < _TABLE_DEPTH
    )
    filters = explanations.filters
    config_rows = tuple(
        (
            key.replace("_", "-"),
            "" if entry["value"] is None else str(entry["value"]),
            entry["source"],
        )
        for key, entry in config.as_dict().items()
    )
    return ReportData(
        title=f"Model audit: {config.model.name}",
        created=finished,
        auditor_version=auditor_version,
        model_name=config.model.name,
        model_sha256=architecture.sha256,
        output_kind=evaluation.output_kind.value,
        config=config,
        config_rows=config_rows,
        dataset=dataset,
        preprocessing=preprocessing,
        class_support=tuple((c.name, c.support) for c in metrics.per_class),
        data_sha256=evaluation.data_sha256,
        evaluation=evaluation,
        worst_classes=tuple(ranked[: min(3, len(ranked))]),
        architecture=architecture,
        layers_shown=layers_shown,
        target_layer=explanations.layer,
        confusion_figure=confusion_figure(metrics.confusion_matrix, dataset.classes),
        calibration_figure=calibration_figure(metrics.calibration),
        colorbar_figure=colorbar_figure(),
        subgroups=subgroup_table(evaluation.predictions, dataset.metadata_columns),
        methods=method_views(explanations),
        not_applicable=tuple(
            (METHODS[key].title, reason) for key, reason in explanations.not_applicable.items()
        ),
        batch_sizes=explanations.batch_sizes,
        shared_seconds=_shared_seconds(explanations),
        filters_figure="" if filters is None else filter_grid(filters),
        n_filters=0 if filters is None else len(filters),
        feature_rows=feature_rows(explanations),
        trust=trust_view(trust),
        misclassified=case_views(misclassified, explanations, evaluation.predictions),
        n_errors=n_errors,
        sampled=case_views(sampled, explanations, evaluation.predictions),
        excluded=tuple(
            zip(evaluation.excluded["path"], evaluation.excluded["reason"], strict=True)
        ),
        limitations=_limitations(dataset, evaluation, explanations.layer, trust),
        command=command,
        versions=versions,
        device_name=device_name,
        started=started,
        finished=finished,
    )
