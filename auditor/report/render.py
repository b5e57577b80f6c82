"""Render stage: Jinja2 HTML (autoescape, strict undefined) and the PDF from the same HTML.

Rendering is a pure function of :class:`~auditor.aggregate.ReportData` and the
templates: ``report.html.j2`` is the skeleton (title page, contents, one
``<section>`` per present section) and ``sections/<id>.html.j2`` renders one section's
view. Number formatting is in :mod:`auditor.report.format`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from auditor.aggregate import ReportData
from auditor.report.templates import html_environment
from auditor.resources import resource_path

__all__ = ["PDF_VARIANT", "render_html", "run_folder_fetcher", "write_pdf"]


def render_html(data: ReportData) -> str:
    """The self-contained report HTML (CSS inlined, figures as data URIs)."""
    environment = html_environment()
    css = resource_path("templates", "report.css").read_text(encoding="utf-8")
    return environment.get_template("report.html.j2").render(report=data, css=css)


def run_folder_fetcher(run_dir: Path) -> Any:
    """A WeasyPrint URL fetcher that fetches only ``data:`` URIs and files inside
    ``run_dir`` and refuses everything else. WeasyPrint (and Pango under it) is imported
    here, not with this module, so that an audit writing only HTML and Markdown runs on a
    machine without Pango, such as a GPU server."""
    from weasyprint.urls import URLFetcher

    class RunFolderFetcher(URLFetcher):
        def __init__(self) -> None:
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

    return RunFolderFetcher()


PDF_VARIANT = "pdf/a-3b"
"""PDF/A-3b (ISO 19005-3, basic conformance): archival, and it may carry attached files."""


def write_pdf(html: str, run_dir: Path, target: Path, attachments: tuple[Path, ...] = ()) -> None:
    """Render ``html`` to ``target`` with WeasyPrint as PDF/A-3b, resolving relative URLs in
    ``run_dir``, with ``attachments`` embedded as associated files (the evidence behind the
    document, byte for byte). Title, author, subject, keywords and creation date come from
    the HTML's ``<title>`` and ``<meta>`` tags."""
    from weasyprint import HTML, Attachment

    document = HTML(
        string=html, base_url=str(run_dir.resolve()) + "/", url_fetcher=run_folder_fetcher(run_dir)
    )
    files = [
        Attachment(
            file_obj=io.BytesIO(path.read_bytes()),
            name=path.name,
            description=f"{path.name}: evidence of this audit",
            relationship="Data",
        )
        for path in attachments
    ]
    document.write_pdf(target, pdf_variant=PDF_VARIANT, attachments=files)
