"""A multi-label model's operating point, label by label: what a call of each label is
worth (PPV and NPV at its threshold, the average precision) and each label's ROC curve
with its band and its threshold marked. Sensitivity, specificity and the AUC are in
*Performance per label* (:mod:`auditor.aggregate.labels`), not repeated here.

Every figure is :func:`auditor.multilabel.operating.label_operating`'s (``metrics.json``'s
``label_operating``; the curves are ``curves.csv``'s rows).
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.figures import figure_uri, panels
from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.label_calibration import FIGURE_LABELS
from auditor.clinical import Operating, Rate
from auditor.clinical.operating import FPR_GRID
from auditor.clinical.settings import ClinicalSettings
from auditor.metrics import Estimate

__all__ = ["LabelOperatingRow", "LabelOperatingView", "label_operating_view"]


@dataclass(frozen=True)
class LabelOperatingRow:
    """One label's calls at its threshold: among the images called, the share with the
    label (PPV); among those not called, the share without it (NPV)."""

    label: str
    threshold: float
    prevalence: float
    ppv: Rate
    npv: Rate
    average_precision: Estimate


@dataclass(frozen=True)
class LabelOperatingView:
    """The operating point per label.

    Attributes:
        rows: The labels with an operating point, in output order; above
            ``report-classes`` labels, the first of them.
        every_label: Whether ``rows`` lists every label with an operating point.
        unread: The labels every image has, or none (no curve, no predictive value).
        figure: The ROC curves of the first :data:`FIGURE_LABELS` labels in ``rows``.
        plotted: The labels in the figure.
        not_applied: The settings declared for a single-label model's positive class
            (``prevalence``, ``target-sensitivity``, ``target-specificity``) with their
            values: not applied to any label (one value is not every label's).
    """

    rows: tuple[LabelOperatingRow, ...]
    every_label: bool
    unread: tuple[str, ...]
    figure: str
    plotted: tuple[str, ...]
    rate_interval: str
    resampled: str
    resamples: int
    not_applied: tuple[str, ...]


def _row(o: Operating) -> LabelOperatingRow:
    positives, negatives = o.sensitivity.n, o.specificity.n
    return LabelOperatingRow(
        label=o.positive_class,
        threshold=o.threshold,
        prevalence=positives / (positives + negatives),
        ppv=o.ppv,
        npv=o.npv,
        average_precision=Estimate(*o.average_precision),
    )


def _figure(operating: list[Operating]) -> str:
    """Each label's ROC curve with its 95% band and its threshold, three to a row."""
    with panels(len(operating)) as (figure, grid):
        for axes, o in zip(grid, operating, strict=True):
            fpr, tpr, _ = o.roc
            axes.fill_between(FPR_GRID, *o.band, color="#4C72B0", alpha=0.2)
            axes.plot(fpr, tpr, color="#4C72B0")
            axes.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=0.8)
            axes.plot(1 - o.specificity.value, o.sensitivity.value, "o", color="#C44E52",
                      markersize=4)  # fmt: skip
            axes.set_xlim(0, 1)
            axes.set_ylim(0, 1.01)
            axes.set_title(f"{o.positive_class[:28]} (AUC {o.auc[0]:.3f})", fontsize=8)
            axes.set_xlabel("1 − specificity", fontsize=7)
            axes.set_ylabel("sensitivity", fontsize=7)
        figure.tight_layout()
        return figure_uri(figure)


def label_operating_view(inputs: AuditInputs) -> LabelOperatingView | None:
    """The section (``None`` for a single-label model, or when no label has both images
    with it and without it)."""
    found = [o for o in inputs.clinical.label_operating if o is not None]
    if not found:
        return None
    names = inputs.dataset.classes
    operating = inputs.clinical.label_operating
    limit = inputs.config.report_classes
    plotted = found[: min(limit, FIGURE_LABELS)]
    return LabelOperatingView(
        rows=tuple(_row(o) for o in found[:limit]),
        every_label=len(found) <= limit,
        unread=tuple(n for n, o in zip(names, operating, strict=True) if o is None),
        figure=_figure(plotted),
        plotted=tuple(o.positive_class for o in plotted),
        rate_interval=inputs.clinical.resampling.rate_interval,
        resampled=inputs.clinical.resampling.describe(),
        resamples=found[0].resamples,
        not_applied=_not_applied(inputs.clinical.settings),
    )


def _not_applied(settings: ClinicalSettings) -> tuple[str, ...]:
    declared = (
        ("prevalence", settings.prevalence),
        ("target-sensitivity", settings.target_sensitivity),
        ("target-specificity", settings.target_specificity),
    )
    return tuple(f"{name} = {value:g}" for name, value in declared if value is not None)
