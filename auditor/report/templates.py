"""The Jinja2 environment every document is rendered with: the package's templates,
strict undefined names, the number filters, and a ``finalize`` that makes each printed
string safe for the document's language."""

from __future__ import annotations

from collections.abc import Callable

import jinja2
import markupsafe

from auditor.report.format import FILTERS, visible
from auditor.resources import resource_path

__all__ = ["html_environment", "template_environment"]


def _visible(value: object) -> object:
    """Every string a ``{{ }}`` prints passes :func:`~auditor.report.format.visible`
    (control and bidirectional characters shown as code points); markup the templates
    mark safe, such as the stylesheet, is left as it is."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return visible(value)
    return value


def html_environment() -> jinja2.Environment:
    """The environment of every HTML document: autoescaped, every string made visible."""
    return template_environment(_visible, autoescape=True)


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
