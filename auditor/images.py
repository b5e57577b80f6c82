"""Load stage, image side: decode image files, preprocess them, and batch them.

Decoding is strict: a truncated or unreadable file is a failure with its reason
(never a partly grey image), reported next to the batch so the evaluation can list it.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from auditor.data import Dataset, Sample
from auditor.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Batch",
    "Preprocessing",
    "channel_statistics",
    "decode_image",
    "expected_size",
    "make_loader",
    "open_image",
    "read_image",
]

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (width × height) read by default: about 10,000 × 10,000 pixels."""


def open_image(source: Path | bytes, max_pixels: int) -> Image.Image:
    """Open an image file (or its bytes) and check its size before any pixel is decoded.

    Every image and mask Auditor reads is opened here: a header that claims more than
    ``max_pixels`` pixels (a decompression bomb, or a scan far larger than a classifier
    reads) is refused before its pixels are decoded. PIL's own bomb check is replaced by
    this one, whose limit is the ``max-pixels`` setting.

    Raises:
        OSError: Not a regular file, not an image, or too many pixels (the message says
            which, with the numbers).
    """
    if isinstance(source, Path) and source.exists() and not source.is_file():
        raise OSError(f"{source.name!r} is not a regular file")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError:
        raise OSError("cannot decode image: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise OSError(f"cannot decode image: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    pixels = image.width * image.height
    if pixels > max_pixels:
        image.close()
        raise OSError(
            f"image is {image.width}x{image.height} ({pixels:,} pixels), above max-pixels "
            f"({max_pixels:,}); a decompression bomb or an image far larger than the model "
            f"reads (raise max-pixels to read it)"
        )
    return image


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the model's input.

    Attributes:
        channels: 3 reads RGB, 1 reads grayscale (to match the model's first layer).
        image_size: Shorter side resized to this, then centre-cropped square; ``None``
            keeps the size.
        mean: Per-channel mean to subtract after scaling to [0, 1], or ``None``.
        std: Per-channel standard deviation to divide by, or ``None``.
        size: ``(H, W)`` every preprocessed image must have, once known; ``None`` lets
            :func:`expected_size` find it.
        max_pixels: Largest image (width × height) read (see :func:`open_image`).
    """

    channels: int
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: tuple[int, int] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def display(self, image: Image.Image) -> torch.Tensor:
        """``(C, H, W)`` float32 in [0, 1]: resized and cropped, not normalised.

        Resizing is PIL's antialiased bilinear filter on the 8-bit image, as
        torchvision's ``Resize`` does on PIL images.
        """
        image = self.resize_crop(_converted(image, self.channels), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def resize_crop(self, image: Image.Image, resample: Image.Resampling) -> Image.Image:
        """Shorter side to ``image_size`` with ``resample``, then the centre square (as is
        without ``image_size``): the geometry of :meth:`display`, shared by masks.

        An image so elongated that the resized whole would exceed ``max_pixels`` (a 1 ×
        60,000 strip is 64 × 3,840,000 at 64 px) has only its centre square resized:
        the same sampling positions, without the memory."""
        if self.image_size is None:
            return image
        scale = self.image_size / min(image.width, image.height)
        size = (
            max(self.image_size, round(image.width * scale)),
            max(self.image_size, round(image.height * scale)),
        )
        left = (size[0] - self.image_size) // 2
        top = (size[1] - self.image_size) // 2
        if size[0] * size[1] > self.max_pixels:
            x, y = image.width / size[0], image.height / size[1]  # source pixels per pixel
            box = (left * x, top * y, (left + self.image_size) * x, (top + self.image_size) * y)
            return image.resize((self.image_size, self.image_size), resample, box=box)
        image = image.resize(size, resample)
        return image.crop((left, top, left + self.image_size, top + self.image_size))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Apply mean and std to ``(..., C, H, W)`` images in [0, 1]."""
        if self.mean is None or self.std is None:
            return images
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images - mean) / std


def _converted(image: Image.Image, channels: int) -> Image.Image:
    """The image in RGB (``channels`` 3) or grayscale: through RGB where PIL has no
    direct conversion (LAB to grayscale).

    Raises:
        OSError: PIL converts its colour mode to neither.
    """
    mode = "RGB" if channels == 3 else "L"
    image = _to_8bit(image)
    try:
        return image.convert(mode)
    except ValueError:
        pass
    try:
        return image.convert("RGB").convert(mode)
    except ValueError:
        raise OSError(
            f"colour mode {image.mode} cannot be converted to {mode}; save the image as RGB "
            f"or grayscale"
        ) from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit images to 8 bits (PIL's convert would clip at 255 instead of scaling).

    32-bit integer images within the 16-bit range are read as 16-bit; :func:`decode_image`
    has refused the others.
    """
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return image
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray((np.clip(values / 65535.0, 0, 1) * 255).round().astype(np.uint8), "L")


def decode_image(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file's bytes fully.

    Raises:
        OSError: The bytes are not a readable image, or it has more than ``max_pixels``
            pixels; the message says why in plain words.
    """
    # WeasyPrint sets PIL's global LOAD_TRUNCATED_IMAGES on import, which would let a
    # truncated file decode as a partly grey image; an audit must reject it.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image = open_image(raw, max_pixels)  # its OSError says what is wrong
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise OSError(f"cannot decode image: {error}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    if image.mode == "F":
        raise OSError("floating-point image: its value range is unknown; save it as 8 or 16 bits")
    if image.mode == "I" and np.asarray(image).max(initial=0) > 65535:
        raise OSError("32-bit image beyond the 16-bit range; save it as 8 or 16 bits")
    return image


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """Read and fully decode an image file (a regular file of at most ``max_pixels``).

    Returns:
        The image and the SHA-256 of the file's bytes.

    Raises:
        OSError: The file cannot be read or decoded (the message says why).
    """
    if path.exists() and not path.is_file():  # a FIFO or device: reading it may never end
        raise OSError(f"{path.name!r} is not a regular file")
    raw = path.read_bytes()
    return decode_image(raw, max_pixels), hashlib.sha256(raw).hexdigest()


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
            tensor = self.preprocessing.display(decode_image(raw, self.preprocessing.max_pixels))
        except OSError as error:
            return _Item(sample.index, None, sha, str(error))
        size = (int(tensor.shape[1]), int(tensor.shape[2]))
        if self.expected_size is not None and size != self.expected_size:
            return _Item(
                sample.index,
                None,
                sha,
                f"image is {size[1]}x{size[0]} but most images are "
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
    samples: Sequence[Sample], preprocessing: Preprocessing, probe: int = 256
) -> tuple[int, int] | None:
    """The (H, W) every image must have: as settled, the resize target, or the most common size.

    Without ``--image-size`` the size is read from the headers of the first ``probe``
    readable files (headers only: cheap); ties go to the size met first.
    """
    if preprocessing.size is not None:
        return preprocessing.size
    if preprocessing.image_size is not None:
        return (preprocessing.image_size, preprocessing.image_size)
    sizes: Counter[tuple[int, int]] = Counter()
    for sample in samples:
        try:
            with open_image(sample.path, preprocessing.max_pixels) as image:
                sizes[(image.height, image.width)] += 1
        except OSError:
            continue
        if sum(sizes.values()) >= probe:
            break
    return sizes.most_common(1)[0][0] if sizes else None


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


def model_preprocessing(
    dataset: Dataset,
    channels: int,
    image_size: int | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Preprocessing:
    """The preprocessing for a model reading ``channels``-channel images, its size settled.

    Raises:
        ConfigError: ``mean`` or ``std`` has neither 1 value nor one per channel.
        DataError: No image can be read to find the size.
    """
    for option, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in (1, channels):
            raise ConfigError(
                f"--{option} has {len(values)} values but the model reads {channels}-channel "
                f"images; give 1 or {channels} values"
            )
    preprocessing = Preprocessing(channels, image_size, mean, std, max_pixels=max_pixels)
    # Settle the input size once, so no later loader scans the headers again.
    size = expected_size(dataset.samples, preprocessing)
    if size is None:
        raise DataError(
            f"none of the {len(dataset.samples)} images in {str(dataset.source)!r} can be "
            f"read; check the files"
        )
    return Preprocessing(channels, image_size, mean, std, size, max_pixels)


def channel_statistics(images: torch.Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """``(B, 2C)`` float32: each image's per-channel pixel mean, then standard deviation,
    in [0, 1] units (the model's normalisation undone), computed on the images' device."""
    flat = images.flatten(2).double()
    means, stds = flat.mean(dim=2), flat.std(dim=2, correction=0)
    if preprocessing.mean is not None and preprocessing.std is not None:
        scale = torch.tensor(preprocessing.std, dtype=torch.float64, device=images.device)
        shift = torch.tensor(preprocessing.mean, dtype=torch.float64, device=images.device)
        means, stds = means * scale + shift, stds * scale
    return torch.cat([means, stds], dim=1).float().cpu().numpy()
