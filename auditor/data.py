"""Load stage, data side: find the validation images and their labels, masks and metadata.

Two layouts are read:

* an ImageFolder-style directory: one sub-folder per class, images inside (any depth);
* a CSV manifest with columns ``path,label``, an optional ``mask`` (a binary
  region-of-interest image) and any metadata columns, kept for subgroup analysis.
  Paths are relative to the manifest's folder and may not leave it.

An image that cannot be used is never dropped silently: it becomes an
:class:`Exclusion` with its reason, listed in the report and in ``excluded.csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESERVED_COLUMNS",
    "Dataset",
    "Exclusion",
    "Sample",
    "discover",
    "resolve_inside",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
_REQUIRED_COLUMNS = ("path", "label")
#: Columns of the predictions table; a manifest's metadata may not reuse them.
RESERVED_COLUMNS = frozenset(
    {"index", "path", "label", "prediction", "confidence", "correct", "sha256", "mask"}
)


@dataclass(frozen=True)
class Sample:
    """One validation image.

    Attributes:
        index: Position in the data set (stable row id across all outputs).
        path: Absolute path of the image.
        relpath: Path relative to the data root, with forward slashes.
        label: Class index into :attr:`Dataset.classes`.
        mask: Absolute path of the region-of-interest mask, if the manifest gives one.
        metadata: Extra manifest columns as ``(name, value)`` pairs.
    """

    index: int
    path: Path
    relpath: str
    label: int
    mask: Path | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Exclusion:
    """An image left out of the evaluation, and why."""

    relpath: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """The validation set as found on disk.

    Attributes:
        root: The folder paths are relative to.
        source: The directory or manifest file the user gave.
        layout: ``"folder"`` or ``"manifest"``.
        classes: Class names in the model's output order.
        samples: Images to evaluate.
        excluded: Files rejected while listing (missing files, unknown extensions).
        metadata_columns: Names of the manifest's extra columns.
        missing_masks: Mask paths the manifest names that do not exist (those samples
            are kept, without a mask).
    """

    root: Path
    source: Path
    layout: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    excluded: tuple[Exclusion, ...]
    metadata_columns: tuple[str, ...]
    missing_masks: tuple[str, ...] = ()

    @property
    def has_masks(self) -> bool:
        return any(s.mask is not None for s in self.samples)

    def check_metadata_column(self, column: str | None, setting: str) -> None:
        """Fail unless ``column`` (the value of ``setting``) is ``None`` or one of the
        manifest's metadata columns.

        Raises:
            ConfigError: It is not.
        """
        if column is None or column in self.metadata_columns:
            return
        have = (
            f"its metadata columns are {', '.join(self.metadata_columns)}"
            if self.metadata_columns
            else "it has none (a folder of images, or a manifest of path and label only)"
        )
        raise ConfigError(
            f"{setting} {column!r} is not a column of {str(self.source)!r}: {have}; "
            f"pass one of them, or add the column to the manifest"
        )


def _relative(path: Path, root: Path) -> str:
    """The path below ``root`` with forward slashes; bytes of a file name that are not
    UTF-8 are shown as U+FFFD (such a file is excluded, see :func:`_not_an_image`)."""
    text = path.relative_to(root).as_posix()
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _class_order(name: str) -> tuple[int, str]:
    """Integer labels sort as numbers (``2`` before ``10``), as output indices do."""
    stripped = name.strip()
    if stripped.isdigit():
        return (0, f"{int(stripped):020d}")
    return (1, name)


def _check_classes(
    found: Sequence[str], classes: tuple[str, ...] | None, where: str
) -> tuple[str, ...]:
    if classes is None:
        ordered = tuple(sorted(set(found), key=_class_order))
        if len(ordered) < 2:
            raise DataError(
                f"{where} has {len(ordered)} class ({', '.join(ordered)}); an audit needs at least "
                f"two classes, or pass --classes with the model's class names"
            )
        return ordered
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(
            f"label {unknown[0]!r} in {where} is not in the class list ({', '.join(classes)}); "
            f"add it to --classes or fix the label"
        )
    return classes


_OUTSIDE = "a link to a place outside the data folder (as in a manifest, not followed)"


def _not_an_image(file: Path) -> str:
    """Why a file in a class folder is not read as an image ("" if it is read)."""
    try:
        file.name.encode("utf-8")
    except UnicodeEncodeError:
        return "its file name is not valid UTF-8; rename it"
    if not file.is_file():  # a FIFO, device or socket (reading it may block), or a dead link
        return "not a regular file" if file.exists() else "broken link"
    if file.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image ({file.suffix or 'no extension'})"
    return ""


def _discover_folder(root: Path, classes: tuple[str, ...] | None) -> Dataset:
    inside = root.resolve()
    class_dirs = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.resolve().is_relative_to(inside)
    )
    excluded: list[Exclusion] = []
    for stray in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if stray.is_dir() and not stray.resolve().is_relative_to(inside):
            excluded.append(Exclusion(_relative(stray, root), _OUTSIDE))
        elif not stray.is_dir():
            irregular = _not_an_image(stray) if not stray.is_file() else ""
            reason = irregular or "not inside a class folder"
            excluded.append(Exclusion(_relative(stray, root), reason))
    manifests = sorted(p.name for p in root.glob("*.csv"))
    if manifests:
        raise DataError(
            f"{str(root)!r} holds {manifests[0]}; to audit a manifest pass the CSV file itself "
            f"(--data {str(root / manifests[0])!r}), or move it out of the class-folder directory"
        )
    if not class_dirs:
        raise DataError(
            f"no images found in {str(root)!r}; expected one sub-folder per class with images "
            f"inside, or a CSV manifest with columns path,label"
        )
    names = _check_classes([d.name for d in class_dirs], classes, f"folder {str(root)!r}")
    found: list[tuple[Path, int]] = []
    for class_dir in class_dirs:
        label = names.index(class_dir.name)
        for file in sorted(class_dir.rglob("*")):
            if file.is_dir() or any(part.startswith(".") for part in file.relative_to(root).parts):
                continue
            reason = _not_an_image(file)
            if not reason and not file.resolve().is_relative_to(inside):
                reason = _OUTSIDE
            if reason:
                excluded.append(Exclusion(_relative(file, root), reason))
            else:
                found.append((file, label))
    samples = tuple(
        Sample(index=i, path=path, relpath=_relative(path, root), label=label)
        for i, (path, label) in enumerate(found)
    )
    return Dataset(root, root, "folder", names, samples, tuple(excluded), ())


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


def _check_unique(columns: list[str], manifest: Path) -> None:
    """A column named twice would lose one of its values silently: refuse it."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(
            f"{manifest.name} has the column {repeated[0]!r} {columns.count(repeated[0])} times "
            f"(columns: {', '.join(columns)}); give each column its own name"
        )


def _read_manifest(manifest: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The manifest's column names and rows (values stripped).

    Raises:
        DataError: Not UTF-8 CSV, a row with more fields than the header, a required
            column missing, or no rows.
    """
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            _check_unique(columns, manifest)
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
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{manifest.name} has no {missing[0]!r} column "
            f"(columns: {', '.join(columns) or 'none'}); "
            f"a manifest needs path,label and optionally mask plus metadata columns"
        )
    if not rows:
        raise DataError(f"{manifest.name} lists no images; add rows of path,label")
    return columns, rows


def _metadata_columns(columns: list[str], manifest: Path) -> tuple[str, ...]:
    """The columns beyond path, label and mask, none of them named like Auditor's own."""
    metadata_columns = tuple(c for c in columns if c not in (*_REQUIRED_COLUMNS, "mask"))
    clashes = [c for c in metadata_columns if c in RESERVED_COLUMNS or c.startswith("p_")]
    if clashes:
        raise DataError(
            f"{manifest.name} has a metadata column named {clashes[0]!r}, which Auditor's "
            f"predictions table uses itself; rename the column"
        )
    return metadata_columns


def _discover_manifest(manifest: Path, classes: tuple[str, ...] | None) -> Dataset:
    columns, rows = _read_manifest(manifest)
    names = _check_classes([r["label"] for r in rows if r["label"]], classes, manifest.name)
    metadata_columns = _metadata_columns(columns, manifest)
    samples: list[Sample] = []
    excluded: list[Exclusion] = []
    seen: dict[Path, tuple[int, str]] = {}
    missing_masks: list[str] = []
    for row_number, row in enumerate(rows, start=2):
        path = resolve_inside(manifest.parent, row["path"], manifest, row_number, "path")
        reason = _row_problem(row, row_number, path, seen, manifest)
        if reason:
            excluded.append(Exclusion(row["path"], reason))
            continue
        mask = (
            resolve_inside(manifest.parent, row["mask"], manifest, row_number, "mask")
            if row.get("mask")
            else None
        )
        if mask is not None and not mask.is_file():
            missing_masks.append(row["mask"])
            mask = None
        samples.append(
            Sample(
                index=len(samples),
                path=path,
                relpath=row["path"],
                label=names.index(row["label"]),
                mask=mask,
                metadata=tuple((c, row.get(c, "")) for c in metadata_columns),
            )
        )
    return Dataset(
        manifest.parent,
        manifest,
        "manifest",
        names,
        tuple(samples),
        tuple(excluded),
        metadata_columns,
        tuple(missing_masks),
    )


def _row_problem(
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


def discover(data: Path, classes: tuple[str, ...] | None = None) -> Dataset:
    """List the validation images of a folder or a CSV manifest.

    Args:
        data: An ImageFolder-style directory or a ``.csv`` manifest.
        classes: Class names in the model's output order; ``None`` sorts the names found.

    Raises:
        DataError: The path is missing, empty, escapes its folder, or has unknown labels.
    """
    if not data.exists():
        raise DataError(
            f"data path {str(data)!r} does not exist; "
            "pass a class-folder directory or a CSV manifest"
        )
    if not data.is_file() and not data.is_dir():
        raise DataError(
            f"data path {str(data)!r} is neither a folder nor a regular file (a device, FIFO "
            f"or socket); pass a class-folder directory or a CSV manifest"
        )
    dataset = (
        _discover_manifest(data, classes) if data.is_file() else _discover_folder(data, classes)
    )
    if not dataset.samples:
        reasons = (
            f" ({len(dataset.excluded)} files excluded, e.g. {dataset.excluded[0].reason})"
            if dataset.excluded
            else ""
        )
        raise DataError(f"no usable images in {str(data)!r}{reasons}; add images or fix the paths")
    return dataset
