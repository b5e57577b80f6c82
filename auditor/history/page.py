"""The history page: ``history.html``, one self-contained file beside the history database.

Describe, then render, as the report does: :func:`history_view` turns the recorded runs
into printed strings and figures, and ``templates/history.html.j2`` only prints them.
Each model's trend figure is a matplotlib SVG embedded as a data URI: each is its own
document, so the element ids matplotlib writes never clash between figures, and its text
is drawn as paths, so the page needs no font and no other file.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

import auditor
from auditor.aggregate.figures import interval_errors, styled_figure
from auditor.errors import OutputError
from auditor.history.store import HEADLINE, History, RunRecord
from auditor.report.format import MISSING, fixed, shorten, shorten_long, thousands
from auditor.report.templates import html_environment

__all__ = [
    "METRIC_LABELS",
    "HistoryView",
    "ModelTrends",
    "RunRow",
    "estimate_text",
    "history_view",
    "render_history",
    "write_history_page",
]

METRIC_LABELS: dict[str, str] = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "auc": "AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "macro_auc": "macro AUC",
    "ece": "ECE",
}
"""How each :data:`~auditor.history.store.HEADLINE` metric is named on the page."""

PASSED_COLOUR = "#0072B2"  # Okabe–Ito blue and vermilion, told apart with colour blindness,
NOT_PASSED_COLOUR = "#D55E00"  # and by shape too: a circle passed, a cross did not pass
BAND_COLOUR = "#8C9BAB"
_COLUMNS = 3  # small multiples per row
_SVG: dict[str, object] = {"svg.fonttype": "path", "svg.hashsalt": "auditor-history"}

Estimate = tuple[float | None, float | None, float | None]


@dataclass(frozen=True)
class RunRow:
    """One run in the table, every cell as printed (``href``: ``""`` when ``missing``)."""

    id: str
    model: str
    version: str
    started: str
    images: str
    accuracy: str
    auc: str
    policy: str
    passed: bool
    host: str
    folder: str
    href: str
    missing: bool


@dataclass(frozen=True)
class ModelTrends:
    """One model's runs over time: a sentence, and the figure (``figure``: an SVG data URI,
    ``""`` when none of its runs has a headline metric)."""

    anchor: str
    name: str
    runs: str
    figure: str
    alt: str


@dataclass(frozen=True)
class HistoryView:
    """Everything ``history.html.j2`` prints (``rows``: newest run first; empty: no runs)."""

    summary: str
    where: str
    written: str
    auditor_version: str
    models: tuple[ModelTrends, ...]
    rows: tuple[RunRow, ...]


def write_history_page(history: History, path: Path) -> Path:
    """Write the history page of every run in ``history`` to ``path`` (``history.html``
    beside the database) and return ``path``. The file is replaced atomically, so a
    browser or a concurrent run never reads half a page.

    Raises:
        OutputError: ``path`` cannot be written.
    """
    view = history_view(history.runs(), history.where, path.absolute().parent)
    html = render_history(view)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(html, encoding="utf-8")
        os.replace(partial, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise OutputError(
            f"the history page {str(path)!r} cannot be written ({error}); check that its "
            f"folder is writable"
        ) from None
    return path


def render_history(view: HistoryView) -> str:
    """The page's HTML (autoescaped; every printed string passes :func:`visible`)."""
    environment = html_environment()
    return environment.get_template("history.html.j2").render(view=view)


def history_view(runs: Sequence[RunRecord], where: str, page_folder: Path) -> HistoryView:
    """The page's view of ``runs`` (any order), recorded in the database ``where`` (no
    password), for a page written in ``page_folder`` (run folders inside it are linked
    relative to it)."""
    ordered = _chronological(runs)
    names = sorted({run.model_name for run in ordered})
    models = tuple(
        _model_trends(f"model-{index}", name, [r for r in ordered if r.model_name == name])
        for index, name in enumerate(names, start=1)
    )
    return HistoryView(
        summary=_summary(ordered, len(names)),
        where=shorten_long(where),
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        auditor_version=auditor.__version__,
        models=models,
        rows=tuple(_row(run, page_folder) for run in reversed(ordered)),
    )


def estimate_text(estimate: Estimate | None) -> str:
    """A metric with its 95% CI: ``0.860 (0.825–0.895)``; without a CI ``0.860``; ``—``
    without a value."""
    value, low, high = (_number(part) for part in (estimate or (None, None, None)))
    if value is None:
        return MISSING
    if low is None or high is None:
        return fixed(value)
    return f"{fixed(value)} ({fixed(low)}–{fixed(high)})"


def _policy_text(run: RunRecord) -> str:
    if run.policy_passed:
        return "passed"
    return f"{run.policy_failed} of {run.policy_declared} not met"


def _row(run: RunRecord, page_folder: Path) -> RunRow:
    href, folder = _report_link(run.folder, page_folder)
    return RunRow(
        id=str(run.id),
        model=shorten(run.model_name),
        version=shorten(run.model_version) or MISSING,
        started=_minute(run.started),
        images=thousands(run.n_images),
        accuracy=estimate_text(run.metrics.get("accuracy")),
        auc=estimate_text(run.metrics.get("auc")),
        policy=_policy_text(run),
        passed=run.policy_passed,
        host=shorten(run.host or MISSING),
        folder=folder,
        href="" if run.missing else href,
        missing=run.missing,
    )


def _report_link(folder: str, page_folder: Path) -> tuple[str, str]:
    """The link to the run's ``report.html`` and the folder as shown: relative to the page
    when the run folder is inside the page's folder (the two move together), else a
    ``file://`` URI and the recorded path."""
    run = Path(folder).absolute()
    try:
        inside = run.resolve().relative_to(page_folder.resolve())
    except ValueError:
        return (run / "report.html").as_uri(), shorten_long(str(run))
    return quote((inside / "report.html").as_posix()), shorten_long(inside.as_posix())


def _summary(runs: Sequence[RunRecord], models: int) -> str:
    """ "5 runs of 2 models, from … to … UTC, recorded in" (the template adds where)."""
    if not runs:
        return "No runs are recorded yet in"
    return f"{_count(len(runs), 'run')} of {_count(models, 'model')}, {_span(runs)}, recorded in"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _span(runs: Sequence[RunRecord]) -> str:
    first, last = _minute(runs[0].started), _minute(runs[-1].started)
    return f"on {first} UTC" if first == last else f"from {first} to {last} UTC"


def _instant(text: str) -> datetime | None:
    """An ISO 8601 time in UTC (a time without an offset is taken as UTC); ``None`` when
    ``text`` is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _minute(text: str) -> str:
    moment = _instant(text)
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else shorten(text)


def _chronological(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Oldest first by start (across time zones; an unreadable time first), then by id."""
    earliest = datetime.min.replace(tzinfo=UTC)
    return sorted(runs, key=lambda run: (_instant(run.started) or earliest, run.id))


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _model_trends(anchor: str, name: str, runs: Sequence[RunRecord]) -> ModelTrends:
    metrics = [m for m in HEADLINE if any(_number(_triple(r, m)[0]) is not None for r in runs)]
    labels = ", ".join(METRIC_LABELS.get(m, m) for m in metrics)
    alt = (
        f"{labels} of {name} over {_count(len(runs), 'run')}, oldest first, each with its 95% "
        "confidence interval as a shaded band; a circle marks a run whose policy passed, a "
        "cross one whose policy did not pass. The table of runs gives the same figures."
    )
    return ModelTrends(
        anchor=anchor,
        name=shorten(name),
        runs=f"{_count(len(runs), 'run')}, {_span(runs)}.",
        figure=trend_figure(runs, metrics) if metrics else "",
        alt=shorten_long(alt),
    )


def _triple(run: RunRecord, metric: str) -> Estimate:
    return run.metrics.get(metric) or (None, None, None)


def trend_figure(runs: Sequence[RunRecord], metrics: Sequence[str]) -> str:
    """Small multiples, one per metric in ``metrics``, of ``runs`` (oldest first) against
    their start times, or their order when two start at the same time: the value, its
    95% CI as a band, the marker by the policy's result. An SVG data URI."""
    x, dated = _positions(runs)
    passed = np.array([run.policy_passed for run in runs], dtype=bool)
    columns = min(len(metrics), _COLUMNS)
    rows = math.ceil(len(metrics) / columns)
    with styled_figure(2.6 * columns, 1.9 * rows + 0.35) as figure:
        figure.set_layout_engine("constrained")
        grid = figure.subplots(rows, columns, squeeze=False)
        for axes, metric in zip(grid.flat, metrics, strict=False):
            triples = [_triple(run, metric) for run in runs]
            _metric_axes(axes, x, triples, passed)
            axes.set_title(METRIC_LABELS.get(metric, metric))
            _x_axis(axes, x, dated)
        for axes in grid.flat[len(metrics) :]:
            axes.set_visible(False)
        figure.legend(handles=_legend(), loc="outside upper center", ncols=3, frameon=False)
        return _svg_uri(figure)


def _positions(runs: Sequence[RunRecord]) -> tuple[NDArray[np.float64], bool]:
    """Start times as matplotlib dates (``True``), or 1, 2, … when two coincide or one
    cannot be read (``False``)."""
    moments = [_instant(run.started) for run in runs]
    known = [m.replace(tzinfo=None) for m in moments if m is not None]
    if len(known) == len(runs) and len(set(known)) == len(known):
        return np.asarray(mdates.date2num(known), dtype=np.float64), True
    return np.arange(1, len(runs) + 1, dtype=np.float64), False


def _metric_axes(
    axes: Axes, x: NDArray[np.float64], triples: Sequence[Estimate], passed: NDArray[np.bool_]
) -> None:
    value, low, high = (
        np.array([np.nan if v is None else v for v in column], dtype=np.float64)
        for column in zip(*triples, strict=True)
    )
    shown = ~np.isnan(value)
    band = shown & ~np.isnan(low) & ~np.isnan(high)
    if band.any():
        axes.fill_between(x, low, high, where=band, color=BAND_COLOUR, alpha=0.3, linewidth=0)
        # A run whose neighbours have no CI would have no band: a bar shows its interval.
        spread = interval_errors(value[band], low[band], high[band])
        axes.errorbar(x[band], value[band], yerr=spread, fmt="none", ecolor=BAND_COLOUR, lw=1)
    axes.plot(x[shown], value[shown], color="#555555", linewidth=0.8, zorder=2)
    for mask, colour, marker in ((passed, PASSED_COLOUR, "o"), (~passed, NOT_PASSED_COLOUR, "X")):
        picked = shown & mask
        axes.scatter(x[picked], value[picked], color=colour, marker=marker, s=22, zorder=3)
    axes.grid(alpha=0.3, linewidth=0.5)


def _x_axis(axes: Axes, x: NDArray[np.float64], dated: bool) -> None:
    if dated:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=6)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if len(x) == 1:  # a day either side: a single instant has no range to pick ticks in
            axes.set_xlim(x[0] - 1, x[0] + 1)
        axes.set_xlabel("run start (UTC)")
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("run, in order of start")


def _legend() -> list[Line2D | Patch]:
    return [
        Line2D([], [], color=PASSED_COLOUR, marker="o", linestyle="none", label="policy passed"),
        Line2D(
            [], [], color=NOT_PASSED_COLOUR, marker="X", linestyle="none", label="policy not passed"
        ),
        Patch(facecolor=BAND_COLOUR, alpha=0.3, label="95% confidence interval"),
    ]


def _svg_uri(figure: Figure) -> str:
    """The figure as an SVG data URI (text as paths; ids and bytes the same every time)."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(_SVG):  # type: ignore[arg-type]
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
