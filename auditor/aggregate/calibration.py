"""The calibration section: expected calibration error and the reliability diagram."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.figures import calibration_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.metrics import ECE_BINS, CalibrationBin

__all__ = ["CalibrationView", "calibration_view"]


@dataclass(frozen=True)
class CalibrationView:
    """The calibration section.

    Attributes:
        ece: Expected calibration error.
        bins: Equal-width confidence bins behind it (:data:`auditor.metrics.ECE_BINS`).
        figure: Reliability diagram and confidence histogram (PNG data URI).
        filled: The bins holding at least one image, lowest confidence first.
    """

    ece: float
    bins: int
    figure: str
    filled: tuple[CalibrationBin, ...]


def calibration_view(inputs: AuditInputs) -> CalibrationView:
    """The ECE, its bins and the reliability diagram."""
    metrics = inputs.evaluation.metrics
    return CalibrationView(
        ece=metrics.ece,
        bins=ECE_BINS,
        figure=calibration_figure(metrics.calibration),
        filled=tuple(b for b in metrics.calibration if b.count),
    )
