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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import ConfigError, DataError
from auditor.manifest import (
    LABEL_SEPARATOR,
    NO_LABEL,
    RESERVED_COLUMNS,
    label_names,
    looks_multi_label,
    metadata_columns,
    read_manifest,
    resolve_inside,
    row_problem,
)

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


@dataclass(frozen=True)
class Sample:
    """One validation image.

    Attributes:
        index: Position in the data set (stable row id across all outputs).
        path: Absolute path of the image.
        relpath: Path relative to the data root, with forward slashes.
        label: Class index into :attr:`Dataset.classes`; -1 in a multi-label data set.
        labels: A multi-label data set's labels of the image (indices into
            :attr:`Dataset.classes`, ascending; ``()``: none of them).
        mask: Absolute path of the region-of-interest mask, if the manifest gives one.
        metadata: Extra manifest columns as ``(name, value)`` pairs.
    """

    index: int
    path: Path
    relpath: str
    label: int
    mask: Path | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    labels: tuple[int, ...] = ()


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
        classes: Class names in the model's output order (a multi-label model's labels).
        samples: Images to evaluate.
        excluded: Files rejected while listing (missing files, unknown extensions).
        metadata_columns: Names of the manifest's extra columns.
        missing_masks: Mask paths the manifest names that do not exist (those samples
            are kept, without a mask).
        multi_label: Whether each image has a set of labels (:attr:`Sample.labels`)
            rather than one class.
    """

    root: Path
    source: Path
    layout: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    excluded: tuple[Exclusion, ...]
    metadata_columns: tuple[str, ...]
    missing_masks: tuple[str, ...] = ()
    multi_label: bool = False

    def label_text(self, sample: Sample) -> str:
        """The sample's class name, or its labels as a manifest writes them (``a;b``, ``-``)."""
        if not self.multi_label:
            return self.classes[sample.label]
        return LABEL_SEPARATOR.join(self.classes[k] for k in sample.labels) or NO_LABEL

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
_HIDDEN = "hidden (its name starts with '.'), not read; rename it to audit it"


def _hidden(entry: Path) -> str:
    """Why a hidden file or folder is not read; a folder's files are counted in its row."""
    if not entry.is_dir():
        return _HIDDEN
    files = sum(1 for f in entry.rglob("*") if not f.is_dir())
    return (
        f"hidden folder of {files} file(s) (its name starts with '.'), not read; rename it "
        "to audit them"
    )


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


def _discover_folder(root: Path, classes: tuple[str, ...] | None, output: str) -> Dataset:
    if output == "multi-label":
        raise DataError(
            f"{str(root)!r} is a folder of classes, which gives each image one label; a "
            f"multi-label audit needs a CSV manifest whose label cells list each image's "
            f"labels separated by {LABEL_SEPARATOR!r}"
        )
    inside = root.resolve()
    class_dirs = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.resolve().is_relative_to(inside)
    )
    excluded: list[Exclusion] = []
    for stray in sorted(root.iterdir()):
        if stray.name.startswith("."):
            excluded.append(Exclusion(_relative(stray, root), _hidden(stray)))
        elif stray.is_dir() and not stray.resolve().is_relative_to(inside):
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
            *folders, name = file.relative_to(root).parts
            if any(part.startswith(".") for part in folders):
                continue  # counted in its hidden folder's row
            if name.startswith("."):
                excluded.append(Exclusion(_relative(file, root), _hidden(file)))
                continue
            if file.is_dir():
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


def _discover_manifest(manifest: Path, classes: tuple[str, ...] | None, output: str) -> Dataset:
    columns, rows = read_manifest(manifest)
    cells = [r["label"] for r in rows if r["label"]]
    multi = output == "multi-label" or (output == "auto" and looks_multi_label(cells))
    sets = {n: label_names(r["label"], manifest, n) for n, r in enumerate(rows, start=2) if multi}
    found = [name for labels in sets.values() for name in labels] if multi else cells
    names = _check_classes(found, classes, manifest.name)
    metadata = metadata_columns(columns, manifest)
    samples: list[Sample] = []
    excluded: list[Exclusion] = []
    seen: dict[Path, tuple[int, str]] = {}
    missing_masks: list[str] = []
    for row_number, row in enumerate(rows, start=2):
        path = resolve_inside(manifest.parent, row["path"], manifest, row_number, "path")
        reason = row_problem(row, row_number, path, seen, manifest)
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
                label=-1 if multi else names.index(row["label"]),
                mask=mask,
                metadata=tuple((c, row.get(c, "")) for c in metadata),
                labels=tuple(sorted(names.index(n) for n in sets[row_number])) if multi else (),
            )
        )
    return Dataset(
        manifest.parent,
        manifest,
        "manifest",
        names,
        tuple(samples),
        tuple(excluded),
        metadata,
        tuple(missing_masks),
        multi,
    )


def discover(data: Path, classes: tuple[str, ...] | None = None, output: str = "auto") -> Dataset:
    """List the validation images of a folder or a CSV manifest.

    Args:
        data: An ImageFolder-style directory or a ``.csv`` manifest.
        classes: Class names in the model's output order; ``None`` sorts the names found.
        output: ``"single-label"``, ``"multi-label"`` (a manifest's label cells are sets
            of labels, see :mod:`auditor.manifest`) or ``"auto"`` (multi-label when a
            manifest's label cell lists several labels or none).

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
        _discover_manifest(data, classes, output)
        if data.is_file()
        else _discover_folder(data, classes, output)
    )
    if not dataset.samples:
        reasons = (
            f" ({len(dataset.excluded)} files excluded, e.g. {dataset.excluded[0].reason})"
            if dataset.excluded
            else ""
        )
        raise DataError(f"no usable images in {str(data)!r}{reasons}; add images or fix the paths")
    return dataset
