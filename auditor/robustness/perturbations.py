"""The perturbations of the robustness suite, one registry entry each.

Each acts on display images, ``(B, C, H, W)`` float32 in [0, 1] after resizing and
cropping and before normalisation, and returns images of the same shape and range.
All but the noise are torchvision's functional transforms (``transforms.v2.functional``;
JPEG through ``torchvision.io``'s encoder and decoder). The noise is torchvision's
``gaussian_noise`` formula (add ``sigma`` times a standard normal draw, clip to [0, 1])
written out, because that function draws from the global generator: here each image's
noise comes from its own generator, seeded by the run's seed and the image's index, so
it does not depend on the batch the image fell in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

__all__ = ["PERTURBATIONS", "Perturbation"]

Apply = Callable[[torch.Tensor, float, torch.Tensor, int], torch.Tensor]
"""``(images, severity, image indices (B,), seed) -> perturbed images``."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbation.

    Attributes:
        name: Its key in files (``"gaussian-noise"``).
        title: How the report names it.
        setting: The :class:`~auditor.robustness.settings.RobustnessSettings` field that
            lists its severities.
        level: How one severity reads, a format string of ``{:g}``: ``"σ {:g}"``.
        apply: The perturbation (see :data:`Apply`).
    """

    name: str
    title: str
    setting: str
    level: str
    apply: Apply


def _noise(images: torch.Tensor, sigma: float, indices: torch.Tensor, seed: int) -> torch.Tensor:
    noise = torch.empty_like(images)
    for row, index in enumerate(indices.tolist()):
        state = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(state)
        noise[row] = torch.randn(images.shape[1:], generator=generator)
    return (images + sigma * noise).clamp(0.0, 1.0)


def _blur(images: torch.Tensor, sigma: float, _: torch.Tensor, __: int) -> torch.Tensor:
    # Three standard deviations each side, but no wider than the image (reflect padding).
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * min(images.shape[-2:]) - 1)
    return F.gaussian_blur(images, [kernel, kernel], [sigma, sigma])


def _brightness(images: torch.Tensor, factor: float, _: torch.Tensor, __: int) -> torch.Tensor:
    return F.adjust_brightness(images, factor)


def _contrast(images: torch.Tensor, factor: float, _: torch.Tensor, __: int) -> torch.Tensor:
    return F.adjust_contrast(images, factor)


def _jpeg(images: torch.Tensor, quality: float, _: torch.Tensor, __: int) -> torch.Tensor:
    encoded = F.jpeg(F.to_dtype(images, torch.uint8, scale=True), int(quality))
    return F.to_dtype(encoded, torch.float32, scale=True)


def _rotation(images: torch.Tensor, degrees: float, _: torch.Tensor, __: int) -> torch.Tensor:
    return F.rotate(images, degrees, interpolation=InterpolationMode.BILINEAR)


def _downscale(images: torch.Tensor, factor: float, _: torch.Tensor, __: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    small = [max(1, round(height * factor)), max(1, round(width * factor))]
    shrunk = F.resize(images, small, antialias=True)
    return F.resize(shrunk, [height, width], antialias=True).clamp(0.0, 1.0)


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation("gaussian-noise", "Gaussian noise", "noise_sigma", "σ {:g}", _noise),
    Perturbation("gaussian-blur", "Gaussian blur", "blur_sigma", "σ {:g} px", _blur),
    Perturbation("brightness", "Brightness", "brightness_factor", "× {:g}", _brightness),
    Perturbation("contrast", "Contrast", "contrast_factor", "× {:g}", _contrast),
    Perturbation("jpeg", "JPEG compression", "jpeg_quality", "quality {:g}", _jpeg),
    Perturbation("rotation", "Rotation", "rotation_degrees", "{:g}°", _rotation),
    Perturbation("downscale", "Down-then-up scaling", "downscale_factor", "× {:g}", _downscale),
)
"""Every perturbation, in the report's order."""
