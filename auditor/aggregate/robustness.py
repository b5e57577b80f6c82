"""The robustness section: how the model's calls change under each perturbation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.aggregate.figures import figure_uri, image_tile, interval_errors, styled_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.metrics import Estimate
from auditor.report.format import percent
from auditor.robustness import PERTURBATIONS, Robustness, RobustnessRow

__all__ = ["RobustnessView", "fragile_sentence", "robustness_findings", "robustness_view"]


@dataclass(frozen=True)
class ExampleRow:
    """One perturbation's severities applied to the first image: ``(level, PNG URI)``."""

    title: str
    tiles: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RobustnessView:
    """The robustness section.

    Attributes:
        robustness: The suite's results (rows, settings, counts).
        findings: Each fragile perturbation in words (also in the summary).
        figure: Accuracy (and sensitivity, specificity) change per severity, PNG URI.
        examples: The first image under every perturbation and severity.
        severities: ``(perturbation, its levels)`` as declared.
    """

    robustness: Robustness
    findings: tuple[str, ...]
    figure: str
    examples: tuple[ExampleRow, ...]
    severities: tuple[tuple[str, str], ...]
    seed: int
    evaluated: int
    sampled: bool


_MEASURED = ("accuracy", "sensitivity", "specificity")


def _falls(row: RobustnessRow, name: str) -> str:
    change: Estimate = getattr(row, f"{name}_change")
    worse = row.worse[_MEASURED.index(name)]
    return (
        f"{name} falls {-100 * change.value:.1f} points (95% CI {-100 * change.ci_high:.1f} "
        f"to {-100 * change.ci_low:.1f}; {worse:,} images turned wrong)"
    )


def _sentence(row: RobustnessRow, harsher: list[RobustnessRow]) -> str:
    """The mildest fragile severity's figures; "from" it when every harsher one is also
    fragile, else "at" it."""
    falls = "; ".join(_falls(row, name) for name in row.fragile)
    where = "from" if all(r.fragile for r in harsher) else "at"
    return (
        f"{row.title}, {where} {row.level}: {falls}; {percent(row.flips.value)} of predictions "
        f"flip (95% CI {percent(row.flips.ci_low)}–{percent(row.flips.ci_high)})."
    )


def robustness_findings(robustness: Robustness | None) -> tuple[str, ...]:
    """Each fragile perturbation at its mildest fragile severity, in words with its figures."""
    if robustness is None:
        return ()
    rows = list(robustness.rows)
    return tuple(
        _sentence(
            row, [r for r in rows[rows.index(row) + 1 :] if r.perturbation == row.perturbation]
        )
        for row in robustness.fragile()
    )


def fragile_sentence(robustness: Robustness | None) -> str:
    """The fragile perturbations in one sentence, each at its mildest fragile severity
    with its largest fall ("" when none is fragile)."""
    if robustness is None or not (fragile := robustness.fragile()):
        return ""
    titles = dict.fromkeys(row.title for row in robustness.rows)
    parts = []
    for row in fragile:
        name = min(row.fragile, key=lambda n: getattr(row, f"{n}_change").value)
        fall = -100 * getattr(row, f"{name}_change").value
        parts.append(f"{row.title} {row.level} ({name} −{fall:.1f} points)")
    return (
        f"Fragile under {len(fragile)} of the {len(titles)} perturbations tried, each at its "
        f"mildest fragile severity: {'; '.join(parts)}."
    )


def _figure(robustness: Robustness) -> str:
    """One panel per perturbation: each measure's change against severity, with intervals."""
    titles = dict.fromkeys(row.title for row in robustness.rows)
    columns = 4
    rows = -(-len(titles) // columns)
    measures = [("accuracy_change", "accuracy", "#4C72B0")]
    if robustness.positive_class is not None:
        measures += [("sensitivity_change", "sensitivity", "#C44E52"),
                     ("specificity_change", "specificity", "#55A868")]  # fmt: skip
    with styled_figure(7.2, 1.9 * rows) as figure:
        axes_list = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
        for axes, title in zip(axes_list, titles, strict=False):
            panel = [r for r in robustness.rows if r.title == title]
            x = np.arange(len(panel))
            for offset, (field, label, color) in enumerate(measures):
                changes = [getattr(r, field) for r in panel]
                values = np.array([100 * c.value for c in changes])
                errors = 100 * interval_errors(
                    [c.value for c in changes], [c.ci_low for c in changes],
                    [c.ci_high for c in changes],
                )  # fmt: skip
                axes.errorbar(x + 0.08 * (offset - 1), values, yerr=errors, marker="o",
                              markersize=3, color=color, label=label, capsize=2)  # fmt: skip
            axes.axhline(0, color="#888888", linewidth=0.8)
            axes.axhline(-100 * robustness.settings.fragile_drop, color="#888888",
                         linewidth=0.8, linestyle="--")  # fmt: skip
            axes.set_title(title)
            axes.set_xticks(x, [r.level for r in panel])
        for axes in axes_list[len(titles) :]:
            axes.set_visible(False)
        axes_list[0].set_ylabel("change (points)")
        axes_list[columns * (rows - 1)].set_ylabel("change (points)")
        handles, labels = axes_list[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower right", frameon=False,
                      bbox_to_anchor=(0.98, 0.08))  # fmt: skip
        figure.tight_layout()
        return figure_uri(figure)


def _examples(robustness: Robustness) -> tuple[ExampleRow, ...]:
    if robustness.examples is None:
        return ()
    images = robustness.examples.permute(0, 2, 3, 1).numpy()
    found: dict[str, list[tuple[str, str]]] = {}
    for row, image in zip(robustness.rows, images, strict=True):
        found.setdefault(row.title, []).append((row.level, image_tile(image)))
    return tuple(ExampleRow(title, tuple(tiles)) for title, tiles in found.items())


def robustness_view(inputs: AuditInputs) -> RobustnessView | None:
    """The section, or ``None`` when the suite was switched off (``robustness-images`` 0)."""
    robustness = inputs.robustness
    if robustness is None:
        return None
    settings = robustness.settings
    return RobustnessView(
        robustness=robustness,
        findings=robustness_findings(robustness),
        figure=_figure(robustness),
        examples=_examples(robustness),
        severities=tuple(
            (p.title, ", ".join(p.level.format(s) for s in getattr(settings, p.setting)))
            for p in PERTURBATIONS
        ),
        seed=settings.seed,
        evaluated=inputs.evaluation.n_images,
        sampled=robustness.images + robustness.unreadable < inputs.evaluation.n_images,
    )
