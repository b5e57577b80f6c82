"""``summary.md``: the audit in a page of Markdown, for a pull-request comment or a ticket.

Rendered from the report's own views (:class:`~auditor.aggregate.ReportData`) with
``templates/summary.md.j2``, so every number equals the report's. Every string a
``{{ }}`` prints is escaped for Markdown: table pipes, line breaks, HTML and the
characters that would start emphasis or a link.
"""

from __future__ import annotations

import re

from auditor.aggregate import ReportData
from auditor.report.format import visible
from auditor.report.templates import template_environment

__all__ = ["markdown_text", "render_markdown"]

_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def markdown_text(value: object) -> object:
    """A string as literal Markdown text on one line (other values as they are)."""
    if not isinstance(value, str):
        return value
    one_line = " ".join(visible(value).split())
    return _SPECIAL.sub(r"\\\1", one_line)


def render_markdown(data: ReportData, model_sha256: str, document: str | None) -> str:
    """The content of ``summary.md``, linking to ``document`` (the run's ``report.pdf`` or
    ``report.html``; ``None`` when neither is written)."""
    environment = template_environment(markdown_text, autoescape=False)
    environment.keep_trailing_newline = True
    views = {section.id: section.view for section in data.sections}
    return environment.get_template("summary.md.j2").render(
        title=data.title,
        created=data.created,
        views=views,
        model_sha256=model_sha256,
        document=document,
    )
