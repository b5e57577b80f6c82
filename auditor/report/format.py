"""Number formatting for the report's templates (Jinja filters) and the CLI.

Plain Python, no rendering library: ``auditor profile`` imports it. Every filter shows
a missing value (``None`` or NaN) as ``—``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "FILTERS",
    "LONG_TEXT",
    "SHORT_TEXT",
    "binary_size",
    "fixed",
    "hundredths",
    "p_value",
    "percent",
    "points",
    "shorten",
    "shorten_long",
    "si",
    "tenths",
    "thousands",
    "visible",
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


def p_value(value: float | None) -> str:
    """Two significant digits: 0.000499 → ``0.0005``, 0.0312 → ``0.031``."""
    return MISSING if _missing(value) else f"{value:.2g}"


def signed(value: float | None) -> str:
    """A change with its sign, three decimals: -0.0123 → ``−0.012``, 0.05 → ``+0.050``."""
    if _missing(value):
        return MISSING
    return fixed(value).replace("-", "−") if value < 0 else "+" + fixed(value)  # type: ignore[operator]


def points(value: float | None) -> str:
    """A change of a share in percentage points, signed: -0.1234 → ``−12.3``, 0.005 → ``+0.5``."""
    if _missing(value):
        return MISSING
    text = f"{100 * value:+.1f}"  # type: ignore[operator]
    return "0.0" if text in ("+0.0", "-0.0") else text.replace("-", "−")


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


LONG_TEXT = 400
"""Characters of a path, a command line or a setting's value shown in a table cell.

WeasyPrint's automatic table layout measures a cell's narrowest width by breaking its
text at every opportunity, a cost that grows with the square of the text's length
(about 2 s for 1,000 characters, 78 s for a command line naming 1,000 classes, on this
project's 2-core machine), so no table cell may hold unbounded text."""


_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
"""Control characters, bidirectional marks, overrides and isolates, and zero-width ones."""


def visible(text: str) -> str:
    """``text`` with every control, bidirectional or zero-width character written as its
    code point, ``⟨U+202E⟩``: a right-to-left override cannot make ``"\u202egnp.exe"``
    read as "exe.png", and a terminal escape shows as what it is. (The CSV and JSON files
    keep the text exactly.)"""
    return _INVISIBLE.sub(lambda match: f"⟨U+{ord(match.group()):04X}⟩", text)


def shorten(text: str, limit: int = SHORT_TEXT) -> str:
    """``text`` (:func:`visible`) up to ``limit`` characters; a longer one ends in
    ``… (N characters)``, so a 10,000-character label does not fill pages (the files hold
    it whole)."""
    text = visible(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def shorten_long(text: str) -> str:
    """A path, command line or setting's value up to :data:`LONG_TEXT` characters."""
    return shorten(text, LONG_TEXT)


FILTERS: dict[str, Callable[..., str]] = {
    "shorten": shorten,
    "shorten_long": shorten_long,
    "percent": percent,
    "points": points,
    "whole_percent": whole_percent,
    "fixed": fixed,
    "hundredths": hundredths,
    "p_value": p_value,
    "tenths": tenths,
    "thousands": thousands,
    "si": si,
    "binary_size": binary_size,
}
"""The report templates' filters (numbers, and long text shortened), by name."""
