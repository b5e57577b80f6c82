"""Number formatting for the report's templates (Jinja filters) and the CLI.

Plain Python, no rendering library: ``auditor profile`` imports it. Every filter shows
a missing value (``None`` or NaN) as ``—``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "FILTERS",
    "binary_size",
    "fixed",
    "hundredths",
    "percent",
    "shorten",
    "si",
    "tenths",
    "thousands",
    "whole_percent",
]

MISSING = "—"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value: float | None, digits: int = 1) -> str:
    """0.8734 → ``87.3%``; NaN or None → ``—``."""
    return MISSING if _missing(value) else f"{100 * value:.{digits}f}%"  # type: ignore[operator]


def whole_percent(value: float | None) -> str:
    """0.8734 → ``87%``."""
    return percent(value, 0)


def fixed(value: float | None, digits: int = 3) -> str:
    """Fixed-point number, three decimals unless told: 0.12345 → ``0.123``."""
    return MISSING if _missing(value) else f"{value:.{digits}f}"


def hundredths(value: float | None) -> str:
    """Two decimals: 12.345 → ``12.35``."""
    return fixed(value, 2)


def tenths(value: float | None) -> str:
    """One decimal: 12.345 → ``12.3``."""
    return fixed(value, 1)


def thousands(value: int | float | None) -> str:
    """12345 → ``12,345``."""
    return MISSING if _missing(value) else f"{value:,.0f}"


def si(value: float | None, unit: str = "") -> str:
    """1.82e9 → ``1.82 G``; with a unit: ``1.82 GFLOPs``."""
    if _missing(value):
        return MISSING
    number = float(value)  # type: ignore[arg-type]
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= factor:
            return f"{number / factor:.2f} {prefix}{unit}"
    return f"{number:.0f} {unit}".strip()


def binary_size(value: int | None) -> str:
    """Bytes as KiB, MiB or GiB."""
    if _missing(value):
        return MISSING
    number = float(value)  # type: ignore[arg-type]
    for factor, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if number >= factor:
            return f"{number / factor:.2f} {unit}"
    return f"{number:.0f} B"


SHORT_TEXT = 120
"""Characters of user-supplied text (a label, a metadata value) shown in a table or figure."""


def shorten(text: str, limit: int = SHORT_TEXT) -> str:
    """``text`` up to ``limit`` characters; a longer one ends in ``… (N characters)``, so a
    10,000-character label does not fill pages (the files hold it whole)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


FILTERS: dict[str, Callable[..., str]] = {
    "shorten": shorten,
    "percent": percent,
    "whole_percent": whole_percent,
    "fixed": fixed,
    "hundredths": hundredths,
    "tenths": tenths,
    "thousands": thousands,
    "si": si,
    "binary_size": binary_size,
}
"""The report templates' filters (numbers, and long text shortened), by name."""
