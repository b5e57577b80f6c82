"""Deterministic generator of a small synthetic dermoscopy-like data set.

Each image is a 64x64 RGB picture of skin with one pigmented lesion, ``"benign"`` or
``"malignant"``, drawn from a hidden *atypia* score in ``[0, 1]`` (larger for malignant
lesions on average, the classes overlapping) that drives the lesion's size, border and
colours: a small CNN can learn the class from the lesion, but not perfectly.

The data set also carries a planted shortcut, for the audit to find: a small ink-blue or
purple marker in the top-left corner (like a ruler mark or an ink dot). In the ``"train"``
split it is drawn on most malignant and few benign images; in the ``"val"`` split it is
independent of the class. A model that learned the marker misclassifies benign validation
images that carry it.

Everything is deterministic given ``(split, n, seed)``: image ``i`` of a split has its own
random stream, seeded from ``(seed, split, i)``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "IMAGE_SIZE",
    "MANIFEST_COLUMNS",
    "MARKER_RATES",
    "SITES",
    "SyntheticImage",
    "generate",
    "write_dataset",
]

CLASSES: tuple[str, ...] = ("benign", "malignant")
"""Class names, in the order of the model's logits."""

IMAGE_SIZE = 64
"""Images are ``IMAGE_SIZE`` x ``IMAGE_SIZE`` RGB."""

SITES: tuple[str, ...] = ("site-A", "site-B", "site-C")
"""Synthetic acquisition sites."""

GENERATOR_VERSION = 2
"""Bumped whenever the generated pixels change, so cached data sets are rewritten."""

MARKER_RATES: dict[str, dict[str, float]] = {
    "train": {"benign": 0.10, "malignant": 0.85},
    "val": {"benign": 0.50, "malignant": 0.50},
}
"""Probability that the corner marker is drawn, per split and class."""

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "label", "mask", "site", "sex", "age", "marker", "marker_mask",
)  # fmt: skip
"""Columns of the CSV manifest written by :func:`write_dataset`."""

Split = Literal["train", "val"]

_SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
_STAMP_NAME = ".synthetic_stamp.json"

# Skin tones (RGB), from light beige to brown; a per-image tone is drawn between them.
_SKIN_LIGHT = np.array([236.0, 200.0, 176.0])
_SKIN_DARK = np.array([160.0, 110.0, 78.0])
# Site-specific colour casts (added to the skin tone): a slightly different camera per site.
_SITE_CAST: dict[str, NDArray[np.float64]] = {
    "site-A": np.array([6.0, 4.0, 2.0]),
    "site-B": np.array([0.0, 0.0, 0.0]),
    "site-C": np.array([-4.0, -6.0, -2.0]),
}
# Lesion colours (RGB).
_LESION_LIGHT = np.array([170.0, 118.0, 82.0])
_LESION_MEDIUM = np.array([122.0, 78.0, 52.0])
_DARK_BROWN = np.array([62.0, 40.0, 32.0])
_BLACK = np.array([32.0, 26.0, 28.0])
_BLUE_GREY = np.array([98.0, 102.0, 120.0])
_RED = np.array([160.0, 78.0, 70.0])
_MARKER_COLOURS = (np.array([112.0, 40.0, 192.0]), np.array([40.0, 60.0, 192.0]))

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)

FloatImage = NDArray[np.float64]


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image with its lesion mask and metadata.

    Attributes:
        image: ``(64, 64, 3)`` uint8 RGB pixels.
        mask: ``(64, 64)`` bool, true inside the lesion.
        label: One of :data:`CLASSES`.
        site: Synthetic acquisition site, one of :data:`SITES`.
        sex: ``"female"`` or ``"male"``.
        age: Age in years, 20 to 85.
        marker: Whether the corner marker artifact is drawn.
        marker_mask: ``(64, 64)`` bool, where the marker is drawn (all false without one).
    """

    image: NDArray[np.uint8]
    mask: NDArray[np.bool_]
    label: str
    site: str
    sex: str
    age: int
    marker: bool
    marker_mask: NDArray[np.bool_]


def _smooth_noise(rng: np.random.Generator, cells: int) -> FloatImage:
    """Smooth random field of roughly unit scale: a ``cells`` x ``cells`` grid upsampled.

    Args:
        rng: Random stream.
        cells: Grid size; smaller means smoother.

    Returns:
        ``(IMAGE_SIZE, IMAGE_SIZE)`` float array.
    """
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    field = Image.fromarray(grid).resize(
        (IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.BICUBIC
    )
    return np.asarray(field, dtype=np.float64)


def _skin(rng: np.random.Generator, site: str) -> FloatImage:
    """Skin-textured background: a per-image tone, low-frequency shading and fine texture."""
    tone_t = rng.beta(2.0, 2.0)
    tone = (1.0 - tone_t) * _SKIN_LIGHT + tone_t * _SKIN_DARK + _SITE_CAST[site]
    shading = 1.0 + 0.06 * _smooth_noise(rng, 3)
    texture = 4.0 * _smooth_noise(rng, 24) + 2.0 * rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE))
    # Vignetting, as in dermoscopy: slightly darker towards the corners.
    r2 = ((_XX - 31.5) ** 2 + (_YY - 31.5) ** 2) / (2 * 31.5**2)
    vignette = 1.0 - 0.08 * r2
    img: FloatImage = tone[None, None, :] * (shading * vignette)[:, :, None] + texture[:, :, None]
    return img


def _hairs(rng: np.random.Generator, img: FloatImage) -> None:
    """Draw a few faint dark hair-like curves into ``img`` (in place)."""
    for _ in range(int(rng.integers(1, 4))):
        # A quadratic Bezier curve across the image.
        pts = rng.uniform(-8.0, IMAGE_SIZE + 8.0, size=(3, 2))
        t = np.linspace(0.0, 1.0, 160)[:, None]
        curve = (1 - t) ** 2 * pts[0] + 2 * (1 - t) * t * pts[1] + t**2 * pts[2]
        xs = np.rint(curve[:, 0]).astype(np.int64)
        ys = np.rint(curve[:, 1]).astype(np.int64)
        keep = (xs >= 0) & (xs < IMAGE_SIZE) & (ys >= 0) & (ys < IMAGE_SIZE)
        strength = rng.uniform(0.25, 0.55)
        img[ys[keep], xs[keep], :] *= 1.0 - strength


def _lesion(rng: np.random.Generator, atypia: float, img: FloatImage) -> NDArray[np.bool_]:
    """Paint a lesion whose look is driven by ``atypia`` into ``img`` (in place).

    Args:
        rng: Random stream.
        atypia: Hidden score in ``[0, 1]``; larger means larger, more irregular and more
            variegated lesions.
        img: ``(H, W, 3)`` float image to paint into.

    Returns:
        The lesion mask.
    """
    mask, dist, r_edge = _lesion_shape(rng, atypia)
    # Soft edge: benign-looking lesions fade out, atypical ones end more sharply.
    edge_width = 2.2 - 1.4 * atypia
    alpha = np.clip((r_edge - dist) / edge_width + 0.5, 0.0, 1.0)
    colour = _lesion_colour(rng, atypia, mask, dist, r_edge)
    img += alpha[:, :, None] * (colour - img)
    return mask


def _lesion_shape(
    rng: np.random.Generator, a: float
) -> tuple[NDArray[np.bool_], FloatImage, FloatImage]:
    """The lesion's mask, each pixel's (stretched) distance from its centre and the border
    radius in that pixel's direction."""
    cx = IMAGE_SIZE / 2 - 0.5 + float(np.clip(rng.normal(0.0, 3.5), -7.0, 7.0))
    cy = IMAGE_SIZE / 2 - 0.5 + float(np.clip(rng.normal(0.0, 3.5), -7.0, 7.0))
    radius = 8.5 + 7.5 * a + rng.normal(0.0, 1.3)
    aspect = rng.uniform(0.85 - 0.2 * a, 1.0)
    rot = rng.uniform(0.0, math.pi)

    dx = _XX - cx
    dy = _YY - cy
    u = dx * math.cos(rot) + dy * math.sin(rot)
    v = (-dx * math.sin(rot) + dy * math.cos(rot)) / aspect
    dist = np.hypot(u, v)
    # Unit complex number e^{i theta} of each pixel's angle around the centre.
    z = (u + 1j * v) / np.maximum(dist, 1e-9)

    # Radial border r(theta) = radius * (1 + Re(sum_k c_k e^{i k theta})): low-frequency
    # lobes (asymmetry) and high-frequency raggedness, evaluated by Horner's rule.
    coeffs = np.zeros(13, dtype=np.complex128)
    low_amp = 0.02 + 0.22 * a**1.5
    high_amp = 0.01 + 0.06 * a
    for k in range(2, 13):
        if k < 6:
            amp = low_amp * rng.uniform(0.3, 1.0) / math.sqrt(k - 1)
        else:
            amp = high_amp * rng.uniform(0.0, 1.0) / math.sqrt(k - 5)
        coeffs[k] = amp * np.exp(1j * rng.uniform(0.0, 2 * math.pi))
    boundary = 1.0 + np.polynomial.polynomial.polyval(z, coeffs).real
    r_edge = radius * np.clip(boundary, 0.4, None)
    mask: NDArray[np.bool_] = dist < r_edge
    return mask, dist, r_edge


def _lesion_colour(
    rng: np.random.Generator,
    a: float,
    mask: NDArray[np.bool_],
    dist: FloatImage,
    r_edge: FloatImage,
) -> FloatImage:
    """The lesion's colour at every pixel: brown, darker inside, variegated with atypia."""
    # Base colour: light-to-medium brown, darker for higher atypia, darker in the centre.
    base_t = float(np.clip(0.25 + 0.5 * a + rng.normal(0.0, 0.15), 0.0, 1.0))
    base = (1.0 - base_t) * _LESION_LIGHT + base_t * _LESION_MEDIUM
    rel = np.clip(dist / np.maximum(r_edge, 1e-6), 0.0, 1.0)
    centre_dark = 1.0 - 0.12 * (1.0 - rel) + 0.06 * _smooth_noise(rng, 10)
    colour = base[None, None, :] * centre_dark[:, :, None]

    # Variegation: blotches of dark brown/black, blue-grey and red, more with atypia.
    for blotch, scale in ((_DARK_BROWN, 1.0), (_BLACK, 0.8), (_BLUE_GREY, 0.7), (_RED, 0.6)):
        field = _smooth_noise(rng, 7)
        threshold = 2.2 - 2.6 * a * scale + rng.normal(0.0, 0.3)
        if field.max() <= threshold:
            continue
        weight = 0.85 * np.clip((field - threshold) / 0.5, 0.0, 1.0) * mask
        colour += weight[:, :, None] * (blotch[None, None, :] - colour)

    # Faint pigment network texture.
    colour += 5.0 * rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE))[:, :, None]
    return colour


def _marker(rng: np.random.Generator, img: FloatImage) -> NDArray[np.bool_]:
    """Draw the corner marker (a 6-8 px ink square or dot, top-left) into ``img``; where."""
    size = int(rng.integers(6, 9))
    x0 = int(rng.integers(1, 10 - size + 1))
    y0 = int(rng.integers(1, 10 - size + 1))
    colour = _MARKER_COLOURS[int(rng.integers(0, len(_MARKER_COLOURS)))]
    colour = colour + rng.normal(0.0, 5.0, size=3)
    ys, xs = _YY[y0 : y0 + size, x0 : x0 + size], _XX[y0 : y0 + size, x0 : x0 + size]
    if rng.random() < 0.5:
        c = (size - 1) / 2
        shape = (ys - y0 - c) ** 2 + (xs - x0 - c) ** 2 <= (size / 2) ** 2
    else:
        shape = np.ones((size, size), dtype=bool)
    patch = img[y0 : y0 + size, x0 : x0 + size]
    patch[shape] = 0.1 * patch[shape] + 0.9 * colour
    drawn = np.zeros(img.shape[:2], dtype=bool)
    drawn[y0 : y0 + size, x0 : x0 + size] = shape
    return drawn


def _one(split: Split, index: int, seed: int) -> SyntheticImage:
    """Generate image ``index`` of ``split`` from its own random stream."""
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(_SPLIT_CODES[split], index))
    rng = np.random.default_rng(seq)

    label = CLASSES[int(rng.integers(0, len(CLASSES)))]
    malignant = label == "malignant"
    site = SITES[int(rng.integers(0, len(SITES)))]
    sex = "female" if rng.random() < 0.5 else "male"
    # Malignant lesions come from slightly older patients.
    age_u = rng.beta(1.6, 1.0) if malignant else rng.random()
    age = round(20 + 65 * float(age_u))
    atypia = float(rng.beta(6.0, 2.0) if malignant else rng.beta(2.0, 6.0))
    marker = bool(rng.random() < MARKER_RATES[split][label])
    hairy = bool(rng.random() < 0.3)

    img = _skin(rng, site)
    if hairy:
        _hairs(rng, img)
    mask = _lesion(rng, atypia, img)
    drawn = _marker(rng, img) if marker else np.zeros(mask.shape, dtype=bool)
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return SyntheticImage(pixels, mask, label, site, sex, age, marker, drawn)


def _check_args(split: str, n: int, seed: int) -> None:
    """Raise ``ValueError`` for an unknown split, a negative count or a negative seed."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def generate(split: Split, n: int, seed: int = 0) -> Iterator[SyntheticImage]:
    """Generate ``n`` synthetic images of a split, deterministically.

    Args:
        split: ``"train"`` (the corner marker mostly on malignant images) or ``"val"``
            (the marker independent of the class).
        n: Number of images.
        seed: Non-negative seed; the two splits differ for the same seed.

    Yields:
        The images, in order. Image ``i`` depends only on ``(split, i, seed)``.

    Raises:
        ValueError: For an unknown split or a negative ``n`` or ``seed``.
    """
    _check_args(split, n, seed)
    return (_one(split, i, seed) for i in range(n))


def _stamp(split: str, n: int, seed: int) -> dict[str, object]:
    """The record that identifies a written data set."""
    return {"split": split, "n": n, "seed": seed, "version": GENERATOR_VERSION}


def write_dataset(folder: Path, split: Split, n: int, seed: int = 0) -> Path:
    """Write a generated split to disk, with a CSV manifest.

    Images go to ``folder/images/``, masks (binary ``"L"`` PNGs, 0 and 255) to
    ``folder/masks/`` and the manifest to ``folder/manifest.csv``, with the columns
    :data:`MANIFEST_COLUMNS`; ``path`` and ``mask`` are relative to ``folder`` with forward
    slashes, ``marker`` is ``True`` or ``False`` and ``marker_mask`` names the marker's mask
    (empty without a marker).

    The call is idempotent: when the manifest exists and the stamp file next to it records
    the same ``(split, n, seed)`` and generator version, the manifest is returned without
    rewriting anything. The stamp is written last, so an interrupted write is redone.

    Returns the manifest's path (``folder`` is created when missing).

    Raises:
        ValueError: For a ``split`` other than ``"train"`` and ``"val"``, or a negative
            ``n`` or ``seed``.
    """
    _check_args(split, n, seed)
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    stamp_path = folder / _STAMP_NAME
    wanted = _stamp(split, n, seed)
    if manifest.is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text(encoding="utf-8")) == wanted:
                return manifest
        except (OSError, ValueError):
            pass
    stamp_path.unlink(missing_ok=True)
    rows = _write_samples(folder, split, n, seed)
    tmp = manifest.with_name(manifest.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest)
    stamp_path.write_text(json.dumps(wanted, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _write_samples(folder: Path, split: Split, n: int, seed: int) -> list[dict[str, str]]:
    """Write the images and masks of a split; their manifest rows."""
    images_dir = folder / "images"
    masks_dir = folder / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, str]] = []
    for i, sample in enumerate(generate(split, n, seed)):
        name = f"{split}_{i:05d}.png"
        Image.fromarray(sample.image).save(images_dir / name)
        Image.fromarray(sample.mask.astype(np.uint8) * 255).save(masks_dir / name)
        if sample.marker:
            Image.fromarray(sample.marker_mask.astype(np.uint8) * 255).save(
                masks_dir / f"marker_{name}"
            )
        rows.append(
            {
                "path": f"images/{name}",
                "label": sample.label,
                "mask": f"masks/{name}",
                "site": sample.site,
                "sex": sample.sex,
                "age": str(sample.age),
                "marker": str(sample.marker),
                "marker_mask": f"masks/marker_{name}" if sample.marker else "",
            }
        )
    return rows
