"""The operating-point section: ROC with its band, the threshold and what it gives, the
decision curve; and its headline in words for the summary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.aggregate.figures import figure_uri, styled_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.clinical import Operating, Rate
from auditor.clinical.operating import FPR_GRID, RECALL_GRID
from auditor.metrics import Estimate
from auditor.report.format import percent

__all__ = ["OperatingView", "operating_sentence", "operating_view"]


@dataclass(frozen=True)
class OperatingView:
    """The operating-point section.

    Attributes:
        rows: ``(measure, rate)`` at the threshold: sensitivity, specificity, PPV, NPV.
        auc: ROC AUC with its bootstrap 95% interval.
        at_prevalence: PPV and NPV at the declared prevalence, with their intervals.
        average_precision: The precision-recall curve's area with its interval.
        roc_figure, pr_figure, decision_figure: PNG data URIs.
    """

    positive_class: str
    auc: Estimate
    resamples: int
    resampled: str
    rate_interval: str
    seed: int
    threshold: float
    chosen_for: str
    rows: tuple[tuple[str, Rate], ...]
    prevalence: float | None
    at_prevalence: tuple[tuple[str, Estimate], ...]
    average_precision: Estimate
    roc_figure: str
    pr_figure: str
    decision_figure: str


def _roc_figure(operating: Operating) -> str:
    fpr, tpr, _ = operating.roc
    at = (1 - operating.specificity.value, operating.sensitivity.value)
    with styled_figure(3.4, 3.2) as figure:
        axes = figure.add_subplot()
        axes.fill_between(FPR_GRID, *operating.band, color="#4C72B0", alpha=0.2, label="95% band")
        axes.plot(fpr, tpr, color="#4C72B0", label=f"ROC AUC {operating.auc[0]:.3f}")
        axes.plot([0, 1], [0, 1], linestyle="--", color="#888888", label="chance")
        axes.plot(*at, "o", color="#C44E52", label=f"threshold {operating.threshold:g}")
        axes.set_xlabel("1 − specificity (false-positive rate)")
        axes.set_ylabel("sensitivity")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.01)
        axes.legend(loc="lower right", frameon=False)
        return figure_uri(figure)


def _pr_figure(operating: Operating) -> str:
    precision, recall, _ = operating.pr
    base = operating.sensitivity.n / (operating.sensitivity.n + operating.specificity.n)
    with styled_figure(3.4, 3.2) as figure:
        axes = figure.add_subplot()
        axes.fill_between(RECALL_GRID, *operating.pr_band, color="#55A868", alpha=0.2,
                          label="95% band")  # fmt: skip
        axes.step(recall, precision, where="post", color="#55A868",
                  label=f"PR (AP {operating.average_precision[0]:.3f})")  # fmt: skip
        axes.axhline(base, linestyle="--", color="#888888", label="prevalence here")
        axes.plot(operating.sensitivity.value, operating.ppv.value, "o", color="#C44E52",
                  label=f"threshold {operating.threshold:g}")  # fmt: skip
        axes.set_xlabel("sensitivity (recall)")
        axes.set_ylabel("PPV (precision)")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.01)
        axes.legend(loc="lower left", frameon=False)
        return figure_uri(figure)


def _decision_figure(operating: Operating) -> str:
    curve = operating.decision
    with styled_figure(3.4, 3.2) as figure:
        axes = figure.add_subplot()
        axes.plot(curve["threshold"], curve["model"], color="#4C72B0", label="model")
        axes.plot(curve["threshold"], curve["treat_all"], color="#DD8452", label="treat all")
        axes.plot(curve["threshold"], curve["treat_none"], color="#888888", label="treat none")
        top = float(np.nanmax(curve[["model", "treat_all"]].to_numpy()))
        axes.set_ylim(-0.05, max(top, 0.05) * 1.1)
        axes.set_xlim(0, 1)
        axes.set_xlabel("threshold probability")
        axes.set_ylabel("net benefit")
        axes.legend(loc="upper right", frameon=False)
        return figure_uri(figure)


def operating_sentence(operating: Operating | None) -> str:
    """The operating point in one sentence for the summary ("" when there is none)."""
    if operating is None:
        return ""
    chosen = f", chosen on these data for {operating.chosen_for}" if operating.chosen_for else ""
    s, p = operating.sensitivity, operating.specificity
    return (
        f"Read as a test for {operating.positive_class} (ROC AUC {operating.auc[0]:.3f}, 95% CI "
        f"{operating.auc[1]:.3f}–{operating.auc[2]:.3f}), at threshold {operating.threshold:g}"
        f"{chosen} it finds {percent(s.value)} of {operating.positive_class} images "
        f"(sensitivity, 95% CI {percent(s.ci_low)}–{percent(s.ci_high)}; {s.hits:,} of {s.n:,}) "
        f"and clears {percent(p.value)} of the others (specificity, "
        f"{percent(p.ci_low)}–{percent(p.ci_high)}; {p.hits:,} of {p.n:,})."
    )


def operating_view(inputs: AuditInputs) -> OperatingView | None:
    """The section, or ``None`` without a positive class or with one class only."""
    operating = inputs.clinical.operating
    if operating is None:
        return None
    rows = (
        ("Sensitivity", operating.sensitivity),
        ("Specificity", operating.specificity),
        ("Positive predictive value (PPV)", operating.ppv),
        ("Negative predictive value (NPV)", operating.npv),
    )
    at_prevalence = tuple(
        (name, Estimate(*value))
        for name, value in (
            ("PPV", operating.ppv_at_prevalence),
            ("NPV", operating.npv_at_prevalence),
        )
        if value is not None
    )
    return OperatingView(
        positive_class=operating.positive_class,
        auc=Estimate(*operating.auc),
        resamples=operating.resamples,
        resampled=inputs.clinical.resampling.describe(),
        rate_interval=inputs.clinical.resampling.rate_interval,
        seed=inputs.clinical.settings.seed,
        threshold=operating.threshold,
        chosen_for=operating.chosen_for,
        rows=rows,
        prevalence=operating.prevalence,
        at_prevalence=at_prevalence,
        average_precision=Estimate(*operating.average_precision),
        roc_figure=_roc_figure(operating),
        pr_figure=_pr_figure(operating),
        decision_figure=_decision_figure(operating),
    )
