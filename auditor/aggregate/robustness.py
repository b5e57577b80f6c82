"""The robustness section: how the model's calls change under each perturbation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from auditor.aggregate.figures import figure_uri, image_tile, interval_errors, styled_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.metrics import Estimate
from auditor.report.format import percent, points
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
        accuracy: What accuracy is: ``accuracy``, or a multi-label model's ``subset
            accuracy``.
        rows: Every row with a multi-label model's label measure of the largest fall, in
            words ("" for a single-label model), and its fragile measures, in words.
    """

    robustness: Robustness
    findings: tuple[str, ...]
    figure: str
    examples: tuple[ExampleRow, ...]
    severities: tuple[tuple[str, str], ...]
    seed: int
    evaluated: int
    sampled: bool
    accuracy: str
    rows: tuple[tuple[RobustnessRow, str, str], ...]


def _measure(name: str, multi_label: bool) -> str:
    """A measure as the report names it: a multi-label model's accuracy is its subset
    accuracy."""
    return "subset accuracy" if multi_label and name == "accuracy" else name


def _falls(row: RobustnessRow, name: str, multi_label: bool) -> str:
    change, worse = row.change(name)
    return (
        f"{_measure(name, multi_label)} falls {-100 * change.value:.1f} points (95% CI "
        f"{-100 * change.ci_high:.1f} to {-100 * change.ci_low:.1f}; {worse:,} images turned "
        "wrong)"
    )


def _sentence(row: RobustnessRow, harsher: list[RobustnessRow], multi_label: bool) -> str:
    """The mildest fragile severity's figures; "from" it when every harsher one is also
    fragile, else "at" it."""
    falls = "; ".join(_falls(row, name, multi_label) for name in row.fragile)
    where = "from" if all(r.fragile for r in harsher) else "at"
    flips = "called sets change" if multi_label else "predictions flip"
    return (
        f"{row.title}, {where} {row.level}: {falls}; {percent(row.flips.value)} of {flips} "
        f"(95% CI {percent(row.flips.ci_low)}–{percent(row.flips.ci_high)})."
    )


def robustness_findings(robustness: Robustness | None) -> tuple[str, ...]:
    """Each fragile perturbation at its mildest fragile severity, in words with its figures."""
    if robustness is None:
        return ()
    rows = list(robustness.rows)
    return tuple(
        _sentence(
            row,
            [r for r in rows[rows.index(row) + 1 :] if r.perturbation == row.perturbation],
            bool(robustness.labels),
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
        name = min(row.fragile, key=lambda n: row.change(n)[0].value)
        fall = -100 * row.change(name)[0].value
        measure = _measure(name, bool(robustness.labels))
        parts.append(f"{row.title} {row.level} ({measure} −{fall:.1f} points)")
    return (
        f"Fragile under {len(fragile)} of the {len(titles)} perturbations tried, each at its "
        f"mildest fragile severity: {'; '.join(parts)}."
    )


def _figure(robustness: Robustness) -> str:
    """One panel per perturbation: each measure's change against severity, with intervals."""
    titles = dict.fromkeys(row.title for row in robustness.rows)
    columns = 4
    rows = -(-len(titles) // columns)
    measures: list[tuple[Callable[[RobustnessRow], Estimate], str, str]] = [
        (lambda r: r.accuracy_change, _measure("accuracy", bool(robustness.labels)), "#4C72B0")
    ]
    if robustness.positive_class is not None:
        measures += [(lambda r: r.change("sensitivity")[0], "sensitivity", "#C44E52"),
                     (lambda r: r.change("specificity")[0], "specificity", "#55A868")]  # fmt: skip
    if robustness.labels:
        measures.append((_largest_label_fall, "largest label fall", "#C44E52"))
    with styled_figure(7.2, 1.9 * rows) as figure:
        axes_list = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
        for axes, title in zip(axes_list, titles, strict=False):
            panel = [r for r in robustness.rows if r.title == title]
            x = np.arange(len(panel))
            for offset, (read, label, color) in enumerate(measures):
                changes = [read(r) for r in panel]
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
        accuracy=_measure("accuracy", bool(robustness.labels)),
        rows=tuple(
            (
                row,
                _worst_label(row) if row.labels else "",
                ", ".join(_measure(name, bool(row.labels)) for name in row.fragile),
            )
            for row in robustness.rows
        ),
    )


def _label_falls(row: RobustnessRow) -> list[tuple[str, Estimate, int]]:
    """A multi-label row's label measures that fell, the largest fall first."""
    measures = [m for label in row.labels for m in label.measures() if m[1].value < 0]
    return sorted(measures, key=lambda m: m[1].value)


def _largest_label_fall(row: RobustnessRow) -> Estimate:
    """The largest fall of a label's measure, or no change (0) when none fell."""
    falls = _label_falls(row)
    return falls[0][1] if falls else Estimate(0.0, 0.0, 0.0)


def _worst_label(row: RobustnessRow) -> str:
    """The label measure of the row's largest fall, with its change in points."""
    falls = _label_falls(row)
    return f"{falls[0][0]} {points(falls[0][1].value)}" if falls else "none fell"
