"""Render stage: Jinja2 HTML (autoescape, strict undefined) and the PDF from the same HTML.

Rendering is a pure function of :class:`~auditor.aggregate.ReportData` and the
templates; number formatting lives in the filters below.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
from weasyprint import HTML
from weasyprint.urls import URLFetcher

from auditor.aggregate import ReportData
from auditor.resources import resource_path

__all__ = ["RunFolderFetcher", "render_html", "write_pdf"]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value: float | None, digits: int = 1) -> str:
    """0.8734 → ``87.3%``; NaN or None → ``—``."""
    return "—" if _missing(value) else f"{100 * value:.{digits}f}%"  # type: ignore[operator]


def fixed(value: float | None, digits: int = 3) -> str:
    """Fixed-point number; NaN or None → ``—``."""
    return "—" if _missing(value) else f"{value:.{digits}f}"


def thousands(value: int | float | None) -> str:
    """12345 → ``12,345``."""
    return "—" if _missing(value) else f"{value:,.0f}"


def si(value: float | None, unit: str = "") -> str:
    """1.82e9 → ``1.82 G``; with a unit: ``1.82 GFLOPs``."""
    if _missing(value):
        return "—"
    number = float(value)  # type: ignore[arg-type]
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= factor:
            return f"{number / factor:.2f} {prefix}{unit}"
    return f"{number:.0f} {unit}".strip()


def binary_size(value: int | None) -> str:
    """Bytes as KiB, MiB or GiB."""
    if _missing(value):
        return "—"
    number = float(value)  # type: ignore[arg-type]
    for factor, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if number >= factor:
            return f"{number / factor:.2f} {unit}"
    return f"{number:.0f} B"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(resource_path("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        percent=percent, fixed=fixed, thousands=thousands, si=si, binary_size=binary_size
    )
    return environment


def render_html(data: ReportData) -> str:
    """The self-contained report HTML (CSS inlined, figures as data URIs)."""
    environment = _environment()
    css = resource_path("templates", "report.css").read_text(encoding="utf-8")
    return environment.get_template("report.html.j2").render(report=data, css=css)


class RunFolderFetcher(URLFetcher):
    """Fetches only ``data:`` URIs and files inside the run folder; refuses everything else."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(allowed_protocols=("data", "file"))
        self.run_dir = run_dir.resolve()

    def fetch(self, url: str, headers: Any = None) -> Any:
        if url.startswith("file:"):
            from urllib.parse import unquote, urlsplit

            path = Path(unquote(urlsplit(url).path)).resolve()
            if not path.is_relative_to(self.run_dir):
                raise ValueError(f"refused to fetch {url}: outside the run folder")
        elif not url.startswith("data:"):
            raise ValueError(f"refused to fetch {url}: only embedded data and run-folder files")
        return super().fetch(url, headers)


def write_pdf(html: str, run_dir: Path, target: Path) -> None:
    """Render ``html`` to ``target`` with WeasyPrint, resolving relative URLs in ``run_dir``."""
    document = HTML(
        string=html, base_url=str(run_dir.resolve()) + "/", url_fetcher=RunFolderFetcher(run_dir)
    )
    document.write_pdf(target)
