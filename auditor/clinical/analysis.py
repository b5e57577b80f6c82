"""Every clinical analysis of one evaluation's predictions, run together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from auditor.clinical.calibration import PositiveCalibration, class_ece, positive_calibration
from auditor.clinical.dependence import Dependence, metadata_dependence, positive_class
from auditor.clinical.failures import Failures, failure_modes
from auditor.clinical.fairness import Fairness, fairness
from auditor.clinical.groups import Grouping, metadata_groups
from auditor.clinical.link import ShortcutLink
from auditor.clinical.operating import Operating, class_aucs, operating_point
from auditor.clinical.settings import ClinicalSettings
from auditor.resample import Resampling

if TYPE_CHECKING:  # the multi-label analyses import auditor.clinical themselves
    from auditor.multilabel.calibration import LabelCalibration
    from auditor.multilabel.failures import LabelFailures

__all__ = ["Clinical", "analyse_predictions"]


@dataclass(frozen=True)
class Clinical:
    """The clinical analyses (``None`` where they do not apply).

    Attributes:
        positive_class: The class a positive call means; ``None`` for a model of more
            than two classes without a declared ``positive-class`` (nothing below runs).
        operating: The operating point; ``None`` also when the data lack a class.
        dependence: Metadata dependence; ``None`` also without metadata columns.
        fairness: Rates per metadata value and their disparities; ``None`` likewise.
        calibration: The positive class's probability's calibration.
        class_ece: Every class's one-vs-rest ECE, in class order (with or without a
            positive class).
        failures: Errors by class and metadata value, and the confident ones.
        grouping: The images grouped by each metadata column, as every analysis above
            (and the report) reads them; the patient column is not among them.
        resampling: What every bootstrap above resampled: images, or patients.
        class_auc: For more than two and at most ``report-classes`` classes, each
            class's one-vs-rest ROC AUC with its bootstrap interval.
        links: Each dependence finding against a flagged shortcut (set by the pipeline
            once the trust stage has run: :func:`~auditor.clinical.link.shortcut_links`).
        label_calibration: A multi-label model's calibration, label by label (empty for
            a single-label model).
        label_failures: A multi-label model's wrong and confident label calls (``None``
            for a single-label model: ``failures``).
        label_fairness: A multi-label model's rates per metadata value and their
            disparities, label by label (empty for a single-label model: ``fairness``;
            and without metadata columns).
        label_operating: A multi-label model's operating point, label by label at its
            threshold (``None`` for a label every image has, or none; empty for a
            single-label model: ``operating``).
    """

    settings: ClinicalSettings
    positive_class: str | None
    operating: Operating | None
    dependence: Dependence | None
    fairness: Fairness | None
    calibration: PositiveCalibration | None
    class_ece: tuple[float, ...]
    failures: Failures
    grouping: Grouping
    resampling: Resampling
    links: tuple[ShortcutLink, ...] = ()
    class_auc: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    label_calibration: tuple[LabelCalibration, ...] = ()
    label_failures: LabelFailures | None = None
    label_fairness: tuple[Fairness, ...] = ()
    label_operating: tuple[Operating | None, ...] = ()


def analyse_predictions(
    predictions: pd.DataFrame,
    metadata_columns: tuple[str, ...],
    classes: tuple[str, ...],
    settings: ClinicalSettings,
    resamples: int,
) -> Clinical:
    """Operating point, metadata dependence and fairness of ``predictions.csv``'s frame.

    Args:
        resamples: Bootstrap resamples for the AUC interval, the ROC band and the
            disparities' intervals (the evaluation's ``bootstrap``).
    """
    positive = positive_class(classes, settings)
    resampling = Resampling.of(predictions, settings.patient_column)
    broken_down = tuple(c for c in metadata_columns if c != settings.patient_column)
    grouping = metadata_groups(
        predictions, broken_down, settings.max_groups, settings.intersections
    )
    per_class = class_ece(predictions, classes)
    failures = failure_modes(predictions, grouping, classes, positive, settings)
    aucs = (
        class_aucs(predictions, classes, resampling, resamples, settings.seed)
        if 2 < len(classes) <= settings.report_classes
        else {}
    )
    if positive is None:
        return Clinical(
            settings, None, None, None, None, None, per_class, failures, grouping, resampling,
            class_auc=aucs,
        )  # fmt: skip
    operating = operating_point(predictions, positive, settings, resamples, resampling)
    threshold = operating.threshold if operating is not None else settings.threshold
    return Clinical(
        settings=settings,
        positive_class=positive,
        operating=operating,
        dependence=metadata_dependence(
            predictions, grouping, classes, settings, resampling, resamples, threshold
        ),
        fairness=fairness(
            predictions, grouping, positive, settings, resamples, resampling, threshold
        ),
        calibration=positive_calibration(predictions, positive, resampling.codes),
        class_ece=per_class,
        failures=failures,
        grouping=grouping,
        resampling=resampling,
        class_auc=aucs,
    )
