"""A CSV manifest's rows: reading them, the paths they name, and the label sets of a
multi-label manifest.

A manifest has columns ``path,label``, an optional ``mask`` and any metadata columns.
A multi-label manifest's label cell lists an image's labels separated by ``;``
(``effusion;nodule``), or holds :data:`NO_LABEL` for an image with none of them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from auditor.errors import DataError

__all__ = [
    "LABEL_SEPARATOR",
    "NO_LABEL",
    "RESERVED_COLUMNS",
    "check_unique",
    "label_names",
    "looks_multi_label",
    "metadata_columns",
    "read_manifest",
    "resolve_inside",
    "row_problem",
]

REQUIRED_COLUMNS = ("path", "label")
#: Columns of the predictions table; a manifest's metadata may not reuse them.
RESERVED_COLUMNS = frozenset(
    {"index", "path", "label", "prediction", "confidence", "correct", "sha256", "mask", "errors"}
)
LABEL_SEPARATOR = ";"
"""Separates the labels of one image in a multi-label manifest."""
NO_LABEL = "-"
"""A multi-label manifest's label cell for an image with none of the labels."""


def looks_multi_label(cells: list[str]) -> bool:
    """Whether label cells are label sets: one of them lists several labels or none."""
    return any(LABEL_SEPARATOR in cell or cell == NO_LABEL for cell in cells)


def label_names(cell: str, manifest: Path, row: int) -> tuple[str, ...]:
    """The labels a multi-label cell lists, each once, in the order written.

    Raises:
        DataError: The cell mixes :data:`NO_LABEL` with labels.
    """
    if cell == NO_LABEL:
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in cell.split(LABEL_SEPARATOR) if n.strip()))
    if NO_LABEL in names:
        raise DataError(
            f"{manifest.name} row {row}: label {cell!r} lists {NO_LABEL!r} (no label) together "
            f"with labels; write the labels alone, or {NO_LABEL!r} alone for an image with none"
        )
    return names


def resolve_inside(root: Path, value: str, manifest: Path, row: int, column: str) -> Path:
    """``value`` (a manifest cell) as a path inside ``root``.

    Raises:
        DataError: It holds a NUL byte, is absolute or leaves ``root``.
    """
    if "\x00" in value:
        raise DataError(
            f"{manifest.name} row {row}: {column} {value!r} contains a NUL byte, which no file "
            f"name can hold; fix the manifest"
        )
    candidate = (root / value).resolve()
    if Path(value).is_absolute() or not candidate.is_relative_to(root.resolve()):
        raise DataError(
            f"{manifest.name} row {row}: {column} {value!r} leaves the manifest's folder; "
            f"use paths relative to {str(root)!r} that stay inside it"
        )
    return candidate


def check_unique(columns: list[str], manifest: Path) -> None:
    """A column named twice would lose one of its values silently: refuse it."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(
            f"{manifest.name} has the column {repeated[0]!r} {columns.count(repeated[0])} times "
            f"(columns: {', '.join(columns)}); give each column its own name"
        )


def read_manifest(manifest: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The manifest's column names and rows (values stripped).

    Raises:
        DataError: Not UTF-8 CSV, a row with more fields than the header, a value in a
            column without a name, a required column missing, or no rows.
    """
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [
                c.strip() or f"{_UNNAMED}{i + 1}" for i, c in enumerate(reader.fieldnames or [])
            ]
            reader.fieldnames = columns
            check_unique(columns, manifest)
            rows = []
            for number, record in enumerate(reader, start=2):
                if None in record:
                    raise DataError(
                        f"{manifest.name} row {number} has more fields than the header "
                        f"({', '.join(columns)}); quote values that contain commas"
                    )
                rows.append({(k or "").strip(): (v or "").strip() for k, v in record.items()})
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"{manifest.name} is not a readable CSV file ({error}); save it as UTF-8 CSV"
        ) from None
    columns = _without_unnamed(columns, rows, manifest)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{manifest.name} has no {missing[0]!r} column "
            f"(columns: {', '.join(columns) or 'none'}); "
            f"a manifest needs path,label and optionally mask plus metadata columns"
        )
    if not rows:
        raise DataError(f"{manifest.name} lists no images; add rows of path,label")
    return columns, rows


_UNNAMED = "\0column "
"""Stands for the name of a column with an empty header cell, followed by its number."""


def _without_unnamed(columns: list[str], rows: list[dict[str, str]], manifest: Path) -> list[str]:
    """The columns without those whose header cell is empty (a spreadsheet's trailing
    comma), removed from ``rows`` too.

    Raises:
        DataError: Such a column holds a value (it would be data without a name).
    """
    unnamed = [c for c in columns if c.startswith(_UNNAMED)]
    for column in unnamed:
        for number, row in enumerate(rows, start=2):
            if row.get(column):
                raise DataError(
                    f"{manifest.name} column {column.removeprefix(_UNNAMED)} has no name in "
                    f"the header but row {number} holds {row[column]!r} in it; name the "
                    f"column or remove it"
                )
        for row in rows:
            row.pop(column, None)
    return [c for c in columns if c not in unnamed]


def metadata_columns(columns: list[str], manifest: Path) -> tuple[str, ...]:
    """The columns beyond path, label and mask, none of them named like Auditor's own."""
    metadata_columns = tuple(c for c in columns if c not in (*REQUIRED_COLUMNS, "mask"))
    clashes = [c for c in metadata_columns if c in RESERVED_COLUMNS or c.startswith("p_")]
    if clashes:
        raise DataError(
            f"{manifest.name} has a metadata column named {clashes[0]!r}, which Auditor's "
            f"predictions table uses itself; rename the column"
        )
    return metadata_columns


def row_problem(
    row: dict[str, str],
    row_number: int,
    path: Path,
    seen: dict[Path, tuple[int, str]],
    manifest: Path,
) -> str:
    """Why a manifest row is excluded ("" if it is not); records its path in ``seen``.

    Raises:
        DataError: The file is listed again with another label.
    """
    if not row["label"]:
        return f"row {row_number} has no label"
    if path in seen:
        first_row, first_label = seen[path]
        if first_label != row["label"]:
            raise DataError(
                f"{manifest.name} lists {row['path']!r} in rows {first_row} and {row_number} "
                f"with different labels ({first_label!r}, {row['label']!r}); keep one row"
            )
        return f"duplicate of row {first_row}"
    seen[path] = (row_number, row["label"])
    if path.is_file():
        return ""
    return "not a regular file" if path.exists() else "file not found"
