"""The counterfactual stage's settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.settings import inherited, setting

__all__ = ["FILLS", "CounterfactualSettings"]

FILLS = ("mean", "blur", "black", "white")
"""What a removed segment is replaced with: the image's mean colour, the image blurred
(Gaussian, sigma a tenth of its side: a patch of colour survives it), black or white."""


@dataclass(frozen=True)
class CounterfactualSettings:
    """How counterfactuals are searched: which images, what replaces a segment, the caps.

    Set in the config file (flat or in its ``[counterfactuals]`` table). The segments are
    the explanation stage's ``superpixels`` (those LIME weighs); ``batch_size`` and
    ``seed`` are the run's.
    """

    counterfactual_images: int = setting(
        16,
        help="Explained cases given counterfactuals (misclassified first, then sampled); 0 "
        "skips counterfactuals",
        unit="images",
        minimum=0,
        flag=True,
    )
    counterfactual_labels: int = setting(
        3,
        help="A multi-label model's misclassified image: most of its wrong calls searched, "
        "the most confident first (the report counts those left out)",
        unit="labels",
        minimum=1,
    )
    counterfactual_fill: str = setting(
        "mean",
        help="What replaces a removed segment: mean (the image's mean colour), blur (the "
        "image blurred; a patch of colour survives it), black or white",
        choices=FILLS,
    )
    counterfactual_segments: int = setting(
        8,
        help="Most segments a segment counterfactual removes",
        unit="segments",
        minimum=1,
        maximum=64,
    )
    counterfactual_passes: int = setting(
        1000,
        help="Most forward passes a segment counterfactual's search runs per image (a "
        "multi-label model's: per label searched)",
        unit="passes",
        minimum=10,
    )
    wachter_steps: int = setting(
        200,
        help="Gradient counterfactual (Wachter et al.): Adam steps per image (a multi-label "
        "model's: per label searched), each one "
        "forward and one backward pass; 0 skips it",
        minimum=0,
    )
    wachter_lr: float = setting(
        0.01,
        help="Gradient counterfactual: Adam's learning rate on the image's pixels in [0, 1]",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    wachter_l1: float = setting(
        1.0,
        help="Gradient counterfactual: weight of the mean absolute change (L1 distance) "
        "against the cross-entropy of the new class",
        minimum=0.0,
    )
    wachter_tv: float = setting(
        0.5,
        help="Gradient counterfactual: weight of the change's total variation (a smooth, "
        "compact change)",
        minimum=0.0,
    )
    batch_size: int = inherited("batch_size", 32)
    seed: int = inherited("seed", 0)
