"""What the trust checks share: their settings, the cases they read, their records."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

__all__ = ["RECORD_DTYPES", "Records", "TrustCase", "TrustSettings"]

RECORD_DTYPES = {
    "index": "int64",
    "role": "string",
    "target": "string",
    "method": "string",
    "measure": "string",
    "step": "string",
    "value": "float64",
    "status": "string",
    "detail": "string",
}
"""Columns of :attr:`Trust.records` (``trust_records.csv``)."""


@dataclass(frozen=True)
class TrustSettings:
    """How the trust checks run (each is a config key of the same name in kebab-case).

    Attributes:
        trust_images: Images (their predicted class) for the randomisation and stability
            checks, which recompute every map; 0 skips both.
        randomisation_steps: Steps of the cascade, from the output layer alone to the
            whole model.
        deletion_steps: Points of the deletion and insertion curves after the first
            (``S``; each costs one forward pass per image and method); 0 skips them.
        sensitivity_samples: Noisy copies per image for max-sensitivity.
        sensitivity_radius: Noise bound, in pixel values of the image in [0, 1].
        localisation_top: Share of the pixels (highest attribution) compared with the mask.
        randomisation_threshold: Rank correlation with the randomised model's maps at or
            above which a method fails.
        sensitivity_threshold: Max-sensitivity above which a method is unstable.
        shortcut_threshold: Share of evidence outside the mask above which a group can
            be flagged as a shortcut...
        shortcut_concentration: ...when one ninth of the image holds this many times its
            share of that evidence.
        seed: Seed of every random draw.
    """

    trust_images: int = 8
    randomisation_steps: int = 4
    deletion_steps: int = 20
    sensitivity_samples: int = 5
    sensitivity_radius: float = 0.02
    localisation_top: float = 0.1
    randomisation_threshold: float = 0.5
    sensitivity_threshold: float = 0.5
    shortcut_threshold: float = 0.5
    shortcut_concentration: float = 2.0
    seed: int = 0


@dataclass(frozen=True)
class TrustCase:
    """One explained (image, target) pair, with its image.

    Attributes:
        index: Sample index.
        group: ``misclassified`` or ``sampled``.
        role: ``predicted`` or ``true``.
        target: Class index explained.
        display: ``(C, H, W)`` image in [0, 1].
    """

    index: int
    group: str
    role: str
    target: int
    display: torch.Tensor = field(repr=False)


class Records:
    """Trust records, collected as tuples and returned as one typed frame."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []

    def add(
        self,
        case: TrustCase,
        target: str,
        method: str,
        measure: str,
        value: float,
        step: str = "",
        status: str = "ok",
        detail: str = "",
    ) -> None:
        self.rows.append(
            (case.index, case.role, target, method, measure, step, value, status, detail)
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(RECORD_DTYPES)).astype(RECORD_DTYPES)
