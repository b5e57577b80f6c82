"""Load stage, data side: find the validation images, read and preprocess them.

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
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from auditor.errors import DataError

__all__ = [
    "Batch",
    "Dataset",
    "Exclusion",
    "Preprocessing",
    "Sample",
    "discover",
    "make_loader",
    "read_image",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
_REQUIRED_COLUMNS = ("path", "label")


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
        has_masks: Whether any sample has a region-of-interest mask.
    """

    root: Path
    source: Path
    layout: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    excluded: tuple[Exclusion, ...]
    metadata_columns: tuple[str, ...]

    @property
    def has_masks(self) -> bool:
        return any(s.mask is not None for s in self.samples)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _check_classes(
    found: Sequence[str], classes: tuple[str, ...] | None, where: str
) -> tuple[str, ...]:
    if classes is None:
        ordered = tuple(sorted(set(found)))
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


def _discover_folder(root: Path, classes: tuple[str, ...] | None) -> Dataset:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    excluded: list[Exclusion] = []
    for stray in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        excluded.append(Exclusion(stray.name, "not inside a class folder"))
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
            if not file.is_file() or any(
                part.startswith(".") for part in file.relative_to(root).parts
            ):
                continue
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                found.append((file, label))
            else:
                excluded.append(
                    Exclusion(
                        _relative(file, root), f"not an image ({file.suffix or 'no extension'})"
                    )
                )
    samples = tuple(
        Sample(index=i, path=path, relpath=_relative(path, root), label=label)
        for i, (path, label) in enumerate(found)
    )
    return Dataset(root, root, "folder", names, samples, tuple(excluded), ())


def _resolve_inside(root: Path, value: str, manifest: Path, row: int, column: str) -> Path:
    candidate = (root / value).resolve()
    if Path(value).is_absolute() or not candidate.is_relative_to(root.resolve()):
        raise DataError(
            f"{manifest.name} row {row}: {column} {value!r} leaves the manifest's folder; "
            f"use paths relative to {str(root)!r} that stay inside it"
        )
    return candidate


def _discover_manifest(manifest: Path, classes: tuple[str, ...] | None) -> Dataset:
    root = manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
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
    names = _check_classes([r["label"] for r in rows if r["label"]], classes, manifest.name)
    metadata_columns = tuple(c for c in columns if c not in (*_REQUIRED_COLUMNS, "mask"))
    samples: list[Sample] = []
    excluded: list[Exclusion] = []
    for row_number, row in enumerate(rows, start=2):
        path = _resolve_inside(root, row["path"], manifest, row_number, "path")
        if not row["label"]:
            excluded.append(Exclusion(row["path"], f"row {row_number} has no label"))
            continue
        if not path.is_file():
            excluded.append(Exclusion(row["path"], "file not found"))
            continue
        mask = (
            _resolve_inside(root, row["mask"], manifest, row_number, "mask")
            if row.get("mask")
            else None
        )
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
        root, manifest, "manifest", names, tuple(samples), tuple(excluded), metadata_columns
    )


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


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the model's input.

    Attributes:
        channels: 3 reads RGB, 1 reads grayscale (to match the model's first layer).
        image_size: Shorter side resized to this, then centre-cropped square; ``None``
            keeps the size.
        mean: Per-channel mean to subtract after scaling to [0, 1], or ``None``.
        std: Per-channel standard deviation to divide by, or ``None``.
    """

    channels: int
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def display(self, image: Image.Image) -> torch.Tensor:
        """``(C, H, W)`` float32 in [0, 1]: resized and cropped, not normalised.

        Resizing is PIL's antialiased bilinear filter on the 8-bit image, as
        torchvision's ``Resize`` does on PIL images.
        """
        image = _to_8bit(image).convert("RGB" if self.channels == 3 else "L")
        if self.image_size is not None:
            scale = self.image_size / min(image.width, image.height)
            size = (
                max(self.image_size, round(image.width * scale)),
                max(self.image_size, round(image.height * scale)),
            )
            image = image.resize(size, Image.Resampling.BILINEAR)
            left = (image.width - self.image_size) // 2
            top = (image.height - self.image_size) // 2
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Apply mean and std to ``(..., C, H, W)`` images in [0, 1]."""
        if self.mean is None or self.std is None:
            return images
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images - mean) / std


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit and 32-bit integer images to 8 bits (PIL's convert would clip at 255)."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = (
        65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else values.max()
    )
    return Image.fromarray((np.clip(values / top, 0, 1) * 255).round().astype(np.uint8), "L")


def decode_image(raw: bytes) -> Image.Image:
    """Decode an image file's bytes fully.

    Raises:
        OSError: The bytes are not a readable image; the message says why in plain words.
    """
    # WeasyPrint sets PIL's global LOAD_TRUNCATED_IMAGES on import, which would let a
    # truncated file decode as a partly grey image; an audit must reject it.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except UnidentifiedImageError:
        raise OSError("cannot decode image: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise OSError(f"cannot decode image: {error}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    return image


def read_image(path: Path) -> tuple[Image.Image, str]:
    """Read and fully decode an image file.

    Returns:
        The image and the SHA-256 of the file's bytes.

    Raises:
        OSError: The file cannot be read or decoded (the message says why).
    """
    raw = path.read_bytes()
    return decode_image(raw), hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class _Item:
    index: int
    image: torch.Tensor | None
    sha256: str
    error: str


@dataclass(frozen=True)
class Batch:
    """A batch of readable images and the failures met while reading it.

    Attributes:
        indices: Sample indices of the images, ``(B,)`` int64.
        images: ``(B, C, H, W)`` float32, preprocessed and normalised.
        hashes: SHA-256 of each image file, in batch order.
        failures: ``(sample index, reason)`` for images that could not be used.
        failure_hashes: SHA-256 of the failed files that could be read at all ('' if not).
    """

    indices: torch.Tensor
    images: torch.Tensor
    hashes: tuple[str, ...]
    failures: tuple[tuple[int, str], ...]
    failure_hashes: tuple[str, ...]


class _ImageDataset(TorchDataset[_Item]):
    def __init__(
        self,
        samples: Sequence[Sample],
        preprocessing: Preprocessing,
        expected_size: tuple[int, int] | None,
    ) -> None:
        self.samples = samples
        self.preprocessing = preprocessing
        self.expected_size = expected_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> _Item:
        sample = self.samples[position]
        try:
            raw = sample.path.read_bytes()
        except OSError as error:
            return _Item(sample.index, None, "", f"cannot read file: {error.strerror or error}")
        sha = hashlib.sha256(raw).hexdigest()
        try:
            image = decode_image(raw)
        except OSError as error:
            return _Item(sample.index, None, sha, str(error))
        tensor = self.preprocessing.display(image)
        size = (int(tensor.shape[1]), int(tensor.shape[2]))
        if self.expected_size is not None and size != self.expected_size:
            return _Item(
                sample.index,
                None,
                sha,
                f"image is {size[1]}x{size[0]} but the others are "
                f"{self.expected_size[1]}x{self.expected_size[0]}; "
                "pass --image-size to resize all images",
            )
        return _Item(sample.index, self.preprocessing.normalise(tensor), sha, "")


def _collate(items: list[_Item]) -> Batch:
    good = [item for item in items if item.image is not None]
    bad = [item for item in items if item.image is None]
    images = (
        torch.stack([item.image for item in good if item.image is not None])
        if good
        else torch.empty(0)
    )
    return Batch(
        indices=torch.tensor([item.index for item in good], dtype=torch.int64),
        images=images,
        hashes=tuple(item.sha256 for item in good),
        failures=tuple((item.index, item.error) for item in bad),
        failure_hashes=tuple(item.sha256 for item in bad),
    )


def expected_size(
    samples: Sequence[Sample], preprocessing: Preprocessing
) -> tuple[int, int] | None:
    """The (H, W) every image must have: the resize target, or the first readable image's size."""
    if preprocessing.image_size is not None:
        return (preprocessing.image_size, preprocessing.image_size)
    for sample in samples:
        try:
            with Image.open(sample.path) as image:
                return (image.height, image.width)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            continue
    return None


def make_loader(
    samples: Sequence[Sample],
    preprocessing: Preprocessing,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader[_Item]:
    """A loader that yields :class:`Batch` objects in sample order, never raising on bad files."""
    dataset = _ImageDataset(samples, preprocessing, expected_size(samples, preprocessing))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
    )
