"""The Jinja2 environment every document is rendered with: the package's templates,
strict undefined names, the number filters, and a ``finalize`` that makes each printed
string safe for the document's language."""

from __future__ import annotations

from collections.abc import Callable

import jinja2

from auditor.report.format import FILTERS
from auditor.resources import resource_path

__all__ = ["template_environment"]


def template_environment(
    finalize: Callable[[object], object], autoescape: bool
) -> jinja2.Environment:
    """An environment over ``templates/`` (``autoescape`` for HTML, not for Markdown)."""
    environment = jinja2.Environment(
        finalize=finalize,
        loader=jinja2.FileSystemLoader(resource_path("templates")),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(FILTERS)
    return environment
