"""Files shipped with Auditor: templates and the sample model.

In an installed wheel they live inside the package (``auditor/templates``,
``auditor/sample_models``); in a source checkout they are at the top level.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["resource_path"]

_PACKAGE = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    """Path of a shipped file or folder, e.g. ``resource_path("templates")``.

    Raises:
        FileNotFoundError: Neither the packaged nor the checkout copy exists.
    """
    for base in (_PACKAGE, _PACKAGE.parent):
        candidate = base.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{'/'.join(parts)} is missing from this Auditor installation; reinstall it"
    )
