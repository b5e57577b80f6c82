"""A multi-label model's calibration section and its page-one sentences: each label's
ECE with its interval, its logistic recalibration and its calibration curve.

Every figure is :class:`~auditor.multilabel.calibration.LabelCalibration`'s
(``metrics.json``'s ``label_calibration``), recomputed by the tests from
``predictions.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.calibration import VERDICTS
from auditor.aggregate.figures import figure_uri, interval_errors, panels
from auditor.aggregate.inputs import AuditInputs
from auditor.clinical.calibration import CURVE_BINS, MISCALIBRATED
from auditor.metrics import ECE_BINS, Estimate
from auditor.multilabel.calibration import LabelCalibration, miscalibrated

__all__ = [
    "LabelCalibrationRow",
    "LabelCalibrationView",
    "label_calibration_findings",
    "label_calibration_unfound",
    "label_calibration_view",
]

FIGURE_LABELS = 9
"""Most labels whose calibration curves the section draws (three rows of three)."""

SHOWN = 3
"""Most miscalibrated labels page one names, one sentence each."""


@dataclass(frozen=True)
class LabelCalibrationRow:
    """One label's row of the section's table.

    Attributes:
        slope, intercept: The recalibration's, ``None`` where it was not fitted.
        brier: ``None`` where every image or none has the label.
        verdict: What the slope's interval says, in words (or why there is no fit).
        flagged: Whether the slope's interval excludes 1.
    """

    label: str
    positives: int
    ece: Estimate
    slope: Estimate | None
    intercept: Estimate | None
    brier: float | None
    verdict: str
    flagged: bool


@dataclass(frozen=True)
class LabelCalibrationView:
    """The calibration section of a multi-label audit.

    Attributes:
        rows: Every label's row, miscalibrated labels first (farthest from 1), then by
            ECE, highest first; above ``report-classes`` labels, the first of them.
        every_label: Whether ``rows`` lists every label.
        figure: The calibration curves of the first :data:`FIGURE_LABELS` rows with a
            fit (PNG data URI; "" when no label has one).
        plotted: The labels in the figure.
        findings: The miscalibrated labels, one sentence each (page one's).
        unfound: Why no label is miscalibrated ("" when one is).
        bins: The ECE's equal-width bins.
        curve_bins: The calibration curves' equal-width bins.
        resampled: What a bootstrap resample drew, in words.
        resamples: Bootstrap resamples.
    """

    rows: tuple[LabelCalibrationRow, ...]
    every_label: bool
    figure: str
    plotted: tuple[str, ...]
    findings: tuple[str, ...]
    unfound: str
    bins: int
    curve_bins: int
    resampled: str
    resamples: int


def label_calibration_findings(calibrations: tuple[LabelCalibration, ...]) -> tuple[str, ...]:
    """The labels whose calibration slope's interval excludes 1, in words: the first
    :data:`SHOWN` (farthest from 1) one sentence each, then how many more."""
    found = miscalibrated(calibrations)
    sentences = []
    for c in found[:SHOWN]:
        assert c.fit is not None, "a miscalibrated label has its fit"
        slope, low, high = c.fit.slope
        sentences.append(
            f"The probability of {c.label} is {VERDICTS[c.verdict]}: calibration slope "
            f"{slope:.2f} (95% CI {low:.2f}–{high:.2f}; 1 is calibrated), Brier score "
            f"{c.fit.brier:.3f}, ECE {c.ece.value:.3f}, on {c.positives:,} images with it."
        )
    if len(found) > SHOWN:
        sentences.append(
            f"{len(found) - SHOWN} more label(s) have a calibration slope whose 95% CI excludes 1."
        )
    return tuple(sentences)


def label_calibration_unfound(calibrations: tuple[LabelCalibration, ...]) -> str:
    """Why no label is miscalibrated, with the highest ECE ("" when one is, or without
    labels); "not judged" when no label could be fitted."""
    if not calibrations or miscalibrated(calibrations):
        return ""
    fitted = sum(c.verdict == "consistent" for c in calibrations)
    worst = max(calibrations, key=lambda c: c.ece.value)
    if not fitted:
        return (
            f"Calibration not judged: no label's recalibration could be fitted (see Calibration "
            f"per label for why); the highest is {worst.label}'s, ECE {worst.ece.value:.3f}."
        )
    unfitted = len(calibrations) - fitted
    why = f"; {unfitted} not fitted, see Calibration per label for why" if unfitted else ""
    return (
        f"Calibration: no label's calibration slope excludes 1 ({fitted} of "
        f"{len(calibrations)} labels fitted{why}); the highest is {worst.label}'s, "
        f"ECE {worst.ece.value:.3f}."
    )


def _row(c: LabelCalibration) -> LabelCalibrationRow:
    fitted = c.fit is not None and c.verdict != "not fitted"
    return LabelCalibrationRow(
        label=c.label,
        positives=c.positives,
        ece=c.ece,
        slope=Estimate(*c.fit.slope) if c.fit and fitted else None,
        intercept=Estimate(*c.fit.intercept) if c.fit and fitted else None,
        brier=c.fit.brier if c.fit else None,
        verdict=VERDICTS.get(c.verdict) or f"not fitted: {c.reason}",
        flagged=c.verdict in MISCALIBRATED,
    )


def _figure(calibrations: list[LabelCalibration]) -> str:
    """Each label's calibration curve with its Wilson intervals, three to a row."""
    with panels(len(calibrations)) as (figure, grid):
        for axes, c in zip(grid, calibrations, strict=True):
            assert c.fit is not None, "only labels with a fit are drawn"
            curve = c.fit.curve
            observed = [b.observed for b in curve]
            low, high = [b.ci_low for b in curve], [b.ci_high for b in curve]
            axes.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=0.8)
            axes.errorbar([b.predicted for b in curve], observed,
                          yerr=interval_errors(observed, low, high), fmt="o-", color="#4C72B0",
                          markersize=3, capsize=2)  # fmt: skip
            axes.set_xlim(0, 1)
            axes.set_ylim(0, 1)
            axes.set_title(f"{c.label[:28]} (ECE {c.ece.value:.3f})", fontsize=8)
            axes.set_xlabel("mean predicted probability", fontsize=7)
            axes.set_ylabel("share with the label", fontsize=7)
        figure.tight_layout()
        return figure_uri(figure)


def _order(calibrations: tuple[LabelCalibration, ...]) -> list[LabelCalibration]:
    """Miscalibrated labels first (farthest from 1), then by ECE, highest first."""
    first = list(miscalibrated(calibrations))
    rest = sorted((c for c in calibrations if c not in first), key=lambda c: -c.ece.value)
    return first + rest


def label_calibration_view(inputs: AuditInputs) -> LabelCalibrationView | None:
    """Every label's calibration (``None`` for a single-label model)."""
    metrics = inputs.evaluation.label_metrics
    calibrations = inputs.clinical.label_calibration
    if metrics is None or not calibrations:
        return None
    ordered = _order(calibrations)
    plotted = [c for c in ordered if c.fit is not None][:FIGURE_LABELS]
    limit = inputs.config.report_classes
    return LabelCalibrationView(
        rows=tuple(_row(c) for c in ordered[:limit]),
        every_label=len(ordered) <= limit,
        figure=_figure(plotted) if plotted else "",
        plotted=tuple(c.label for c in plotted),
        findings=label_calibration_findings(calibrations),
        unfound=label_calibration_unfound(calibrations),
        bins=ECE_BINS,
        curve_bins=CURVE_BINS,
        resampled=metrics.resampled,
        resamples=inputs.evaluation.settings.bootstrap,
    )
