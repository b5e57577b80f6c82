"""The calibration section: expected calibration error and the reliability diagram; the
positive class's calibration (slope, intercept, Brier, curve); every class's ECE."""

from __future__ import annotations

import math
from dataclasses import dataclass

from auditor.aggregate.figures import calibration_figure, figure_uri, interval_errors, styled_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.clinical.calibration import PositiveCalibration, calibration_verdict
from auditor.metrics import ECE_BINS, CalibrationBin, Estimate

__all__ = ["VERDICTS", "CalibrationView", "calibration_sentence", "calibration_view"]


@dataclass(frozen=True)
class CalibrationView:
    """The calibration section.

    Attributes:
        ece: Expected calibration error.
        bins: Equal-width confidence bins behind it (:data:`auditor.metrics.ECE_BINS`).
        figure: Reliability diagram and confidence histogram (PNG data URI).
        filled: The bins holding at least one image, lowest confidence first.
        positive: The positive class's calibration, or ``None``.
        slope, intercept: Its logistic recalibration, as estimates.
        positive_figure: Its calibration curve with Wilson bands (PNG data URI).
        class_ece: ``(class, one-vs-rest ECE)`` for a model of more than two classes;
            above ``report-classes`` classes, the worst of them.
        every_class: Whether ``class_ece`` lists every class.
    """

    ece: float
    bins: int
    figure: str
    filled: tuple[CalibrationBin, ...]
    positive: PositiveCalibration | None
    slope: Estimate | None
    intercept: Estimate | None
    positive_figure: str
    class_ece: tuple[tuple[str, float], ...]
    every_class: bool


def _positive_figure(calibration: PositiveCalibration) -> str:
    curve = calibration.curve
    predicted = [b.predicted for b in curve]
    observed = [b.observed for b in curve]
    errors = interval_errors(observed, [b.ci_low for b in curve], [b.ci_high for b in curve])
    with styled_figure(3.4, 3.2) as figure:
        axes = figure.add_subplot()
        axes.plot([0, 1], [0, 1], linestyle="--", color="#888888", label="calibrated")
        axes.errorbar(predicted, observed, yerr=errors, fmt="o-", color="#4C72B0",
                      capsize=2, label="observed share (95% CI)")  # fmt: skip
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel(f"mean predicted probability of {calibration.positive_class}"[:60])
        axes.set_ylabel("observed share")
        axes.legend(loc="upper left", frameon=False)
        return figure_uri(figure)


VERDICTS = {
    "inverted": "inverted (it falls as the outcome becomes likelier)",
    "over-confident": "over-confident (too close to 0 and 1)",
    "under-confident": "under-confident (too close to the middle)",
    "consistent": "consistent with calibrated",
}
"""Each fitted verdict (:func:`~auditor.clinical.calibration.calibration_verdict`) in words."""


def calibration_sentence(calibration: PositiveCalibration | None) -> str:
    """The positive class's calibration in one sentence ("" without one or a fit)."""
    verdict = calibration_verdict(calibration)
    if calibration is None or verdict not in VERDICTS:
        return ""
    slope, low, high = calibration.slope
    return (
        f"The probability of {calibration.positive_class} is {VERDICTS[verdict]}: calibration "
        f"slope {slope:.2f} (95% CI {low:.2f}–{high:.2f}; 1 is calibrated), Brier score "
        f"{calibration.brier:.3f}."
    )


def calibration_view(inputs: AuditInputs) -> CalibrationView | None:
    """The ECE, its bins and the reliability diagram; ``None`` for a multi-label model."""
    metrics = inputs.evaluation.metrics
    if metrics is None:
        return None
    clinical = inputs.clinical
    positive = clinical.calibration
    fitted = positive is not None and not math.isnan(positive.slope[0])
    classes = inputs.dataset.classes
    return CalibrationView(
        ece=metrics.ece,
        bins=ECE_BINS,
        figure=calibration_figure(metrics.calibration),
        filled=tuple(b for b in metrics.calibration if b.count),
        positive=positive,
        slope=Estimate(*positive.slope) if positive and fitted else None,
        intercept=Estimate(*positive.intercept) if positive and fitted else None,
        positive_figure=_positive_figure(positive) if positive else "",
        class_ece=_class_ece(classes, clinical.class_ece, inputs.config.report_classes),
        every_class=len(classes) <= inputs.config.report_classes,
    )


def _class_ece(
    classes: tuple[str, ...], eces: tuple[float, ...], limit: int
) -> tuple[tuple[str, float], ...]:
    """Every class's ECE for more than two classes; above ``limit``, the worst ones."""
    if len(classes) <= 2:
        return ()
    pairs = list(zip(classes, eces, strict=True))
    if len(pairs) > limit:
        pairs = sorted(pairs, key=lambda pair: (-pair[1], pair[0]))[:limit]
    return tuple(pairs)
