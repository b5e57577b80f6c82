"""``auditor compare OLD NEW``: a comparison folder with ``comparison.json``,
``comparison.html`` and ``comparison.pdf`` (PDF/A-3b, ``comparison.json`` attached).

The body is the regular report's "Changes since the previous audit" section; the figures
add the change of each metric with its interval, the inputs' and the confidence's
distributions in both audits, and the explanation maps' rank correlations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from auditor import __version__
from auditor.aggregate.changes import METRIC_NAMES, ChangesView, comparison_view
from auditor.aggregate.figures import figure_uri, styled_figure
from auditor.compare.audits import Audit
from auditor.compare.comparison import Comparison, compare_audits
from auditor.compare.files import comparison_document
from auditor.documents import write_json
from auditor.history.settings import PeriodicSettings
from auditor.report.render import write_pdf
from auditor.report.templates import html_environment
from auditor.resources import resource_path
from auditor.runfolder import assemble

__all__ = ["ComparisonPage", "write_comparison"]

OLD_COLOUR, NEW_COLOUR = "#8c8c8c", "#1f5fa8"


@dataclass(frozen=True)
class Figure:
    uri: str
    alt: str
    caption: str


@dataclass(frozen=True)
class ComparisonPage:
    """What ``comparison.html.j2`` renders."""

    title: str
    created: str
    auditor_version: str
    audits: tuple[tuple[str, dict[str, str]], ...]
    view: ChangesView
    figures: tuple[Figure, ...]


def _metrics_figure(comparison: Comparison) -> Figure:
    rows = [
        *((METRIC_NAMES[d.name], d) for d in comparison.metrics),
        *((f"{METRIC_NAMES[d.name]} of {label}", d) for label, d in comparison.labels),
        *((f"{c} = {v}", d) for c, v, d in comparison.subgroups),
    ]
    with styled_figure(6.0, 0.3 * len(rows) + 0.8) as figure:
        axes = figure.add_subplot()
        for y, (_, d) in enumerate(rows):
            colour = "#b2182b" if d.worse else NEW_COLOUR
            axes.plot([d.ci_low, d.ci_high], [y, y], color=colour, linewidth=2)
            axes.plot([d.diff], [y], "o", color=colour)
        axes.axvline(0, color="black", linewidth=0.8)
        axes.set_yticks(range(len(rows)), [name for name, _ in rows])
        axes.invert_yaxis()
        axes.set_xlabel("change (now − previous), with its 95% interval")
        uri = figure_uri(figure)
    return Figure(
        uri,
        "Each metric's change with its 95% interval",
        "Each metric's change and its 95% interval; red: the whole interval is below zero.",
    )


def _distribution_figure(old: Audit, new: Audit, comparison: Comparison) -> Figure | None:
    score = _score(comparison)
    title = "confidence" if score == "confidence" else f"probability of {score[2:]}"
    panels = [(title, old.predictions[score], new.predictions[score])]
    if old.intensities is not None and new.intensities is not None:
        panels += [
            (c.replace("_", " "), old.intensities[c], new.intensities[c])
            for c in new.intensities.columns
            if c.startswith("mean_") and c in old.intensities.columns
        ]
    with styled_figure(2.2 * len(panels), 1.9) as figure:
        for k, (name, before, after) in enumerate(panels):
            axes = figure.add_subplot(1, len(panels), k + 1)
            low, high = min(before.min(), after.min()), max(before.max(), after.max())
            bins = [float(b) for b in np.linspace(low, high, 21)]
            axes.hist(before, bins=bins, color=OLD_COLOUR, alpha=0.6, label="previous")
            axes.hist(after, bins=bins, color=NEW_COLOUR, alpha=0.6, label="now")
            axes.set_title(name)
        figure.axes[0].legend(frameon=False)
        uri = figure_uri(figure)
    what = f"the {title}"
    return Figure(
        uri,
        f"Histograms of {what} and the mean intensity of each channel in both audits",
        f"{what.capitalize()} and each channel's mean pixel intensity per image: previous "
        "audit (grey) and this one (blue).",
    )


def _score(comparison: Comparison) -> str:
    """The column of the score whose distribution is drawn: the confidence, or a
    multi-label model's label whose probability moved most."""
    if not comparison.multi_label:
        return "confidence"
    return "p_" + comparison.predictions[1].name.removeprefix("probability of ")


def _explanations_figure(comparison: Comparison) -> Figure | None:
    rows = [r for r in comparison.explanations.to_dict("records") if r["images"]]
    if not rows:
        return None
    with styled_figure(6.0, 0.3 * len(rows) + 0.8) as figure:
        axes = figure.add_subplot()
        for y, row in enumerate(rows):
            low, median, high = (float(row[k]) for k in ("low", "median", "high"))
            axes.plot([low, high], [y, y], color=NEW_COLOUR, linewidth=2)
            axes.plot([median], [y], "o", color=NEW_COLOUR)
        axes.set_yticks(range(len(rows)), [str(r["method"]) for r in rows])
        axes.invert_yaxis()
        axes.set_xlim(-1, 1)
        axes.set_xlabel("Spearman correlation of the two audits' maps (median, quartiles)")
        uri = figure_uri(figure)
    return Figure(
        uri,
        "Rank correlation of each trusted method's maps between the two audits",
        "Where the two models look: each trusted method's maps of the same images, ranked "
        "alike (1) or not (0).",
    )


def render_comparison(old: Audit, new: Audit, comparison: Comparison) -> str:
    """The comparison's self-contained HTML."""
    figures = [
        _metrics_figure(comparison),
        _distribution_figure(old, new, comparison),
        _explanations_figure(comparison),
    ]
    page = ComparisonPage(
        title=f"Audit comparison: {old.label} and {new.label}",
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        auditor_version=__version__,
        audits=(("Previous", old.identity), ("Now", new.identity)),
        view=comparison_view(comparison),
        figures=tuple(f for f in figures if f is not None),
    )
    environment = html_environment()
    css = resource_path("templates", "report.css").read_text(encoding="utf-8")
    return environment.get_template("comparison.html.j2").render(page=page, css=css)


def write_comparison(
    old: Audit, new: Audit, out: Path, settings: PeriodicSettings, resamples: int
) -> Path:
    """Compare ``new`` with ``old`` and write the comparison folder under ``out``."""
    comparison = compare_audits(old, new, settings, resamples)
    html = render_comparison(old, new, comparison)

    def write(folder: Path) -> None:
        write_json(folder / "comparison.json", comparison_document(comparison))
        (folder / "comparison.html").write_text(html, encoding="utf-8")
        write_pdf(html, folder, folder / "comparison.pdf", (folder / "comparison.json",))

    stem = f"compare-{old.identity['model_name']}"
    return assemble(out, stem, datetime.now(UTC), write)
