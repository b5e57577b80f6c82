"""The robustness suite's settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from auditor.settings import Check, inherited, setting

__all__ = ["RobustnessSettings"]

MAX_LEVELS = 5


def _levels(low: float, high: float, *, harsher: str, whole: bool = False) -> Check:
    """A check that a severity list has 1 to :data:`MAX_LEVELS` distinct values in
    ``(low, high]`` (whole numbers when ``whole``), listed mild to severe: each value
    ``"larger"`` or ``"smaller"`` (``harsher``) than the one before."""

    def check(values: tuple[float, ...]) -> str | None:
        if not 1 <= len(values) <= MAX_LEVELS:
            return f"needs 1 to {MAX_LEVELS} severities, got {len(values)}"
        if len(set(values)) != len(values):
            return f"has repeated severities: {list(values)}"
        outside = [v for v in values if not (math.isfinite(v) and low < v <= high)]
        if outside:
            return f"severities must be in ({low:g}, {high:g}], got {outside}"
        if whole and any(v != int(v) for v in values):
            return f"severities must be whole numbers, got {list(values)}"
        ordered = sorted(values, reverse=harsher == "smaller")
        if list(values) != ordered:
            return (
                f"list severities mild to severe (each {harsher} than the last), got {list(values)}"
            )
        return None

    return check


@dataclass(frozen=True)
class RobustnessSettings:
    """Which perturbations the model is run under, how hard, and what counts as fragile.

    Each perturbation's severities are listed from mild to severe. ``batch_size``,
    ``workers``, ``seed`` and ``patient_column`` are the run's.
    """

    robustness_images: int = setting(
        1000,
        help="Evaluated images run under every perturbation (a seeded sample when there are "
        "more); 0 skips the robustness suite",
        unit="images",
        minimum=0,
        flag=True,
    )
    noise_sigma: tuple[float, ...] = setting(
        (0.02, 0.05, 0.1),
        help="Gaussian noise: standard deviations added to pixels in [0, 1] (then clipped)",
        check=_levels(0.0, 1.0, harsher="larger"),
    )
    blur_sigma: tuple[float, ...] = setting(
        (0.5, 1.0, 2.0),
        help="Gaussian blur: standard deviations in pixels of the model's input",
        unit="pixels",
        check=_levels(0.0, 64.0, harsher="larger"),
    )
    brightness_factor: tuple[float, ...] = setting(
        (0.8, 0.6, 0.4),
        help="Brightness: factors the pixels are multiplied by (below 1 darkens)",
        check=_levels(0.0, 1.0, harsher="smaller"),
    )
    contrast_factor: tuple[float, ...] = setting(
        (0.8, 0.6, 0.4),
        help="Contrast: factors of the blend with the image's mean grey (below 1 flattens)",
        check=_levels(0.0, 1.0, harsher="smaller"),
    )
    jpeg_quality: tuple[float, ...] = setting(
        (75.0, 50.0, 25.0),
        help="JPEG: qualities the image is encoded at and decoded from (torchvision.io)",
        check=_levels(0.0, 100.0, harsher="smaller", whole=True),
    )
    rotation_degrees: tuple[float, ...] = setting(
        (5.0, 10.0, 15.0),
        help="Rotation: angles in degrees, counter-clockwise about the centre (corners "
        "filled with black)",
        unit="degrees",
        check=_levels(0.0, 180.0, harsher="larger"),
    )
    downscale_factor: tuple[float, ...] = setting(
        (0.75, 0.5, 0.25),
        help="Down-then-up scaling: the image is shrunk by this factor (antialiased) and "
        "resized back",
        check=_levels(0.0, 1.0, harsher="smaller"),
    )
    fragile_drop: float = setting(
        0.05,
        help="Smallest fall in accuracy, sensitivity or specificity under a perturbation "
        "(with its 95% interval below zero) that calls the model fragile to it",
        unit="share",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    batch_size: int = inherited("batch_size", 32)
    workers: int = inherited("workers", 0)
    seed: int = inherited("seed", 0)
