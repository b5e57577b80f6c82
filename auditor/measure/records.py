"""What the trust checks share: their settings, the cases they read, their records."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from auditor.explain.engine import Explanations
from auditor.explain.store import Case
from auditor.settings import inherited, setting

__all__ = [
    "RECORD_DTYPES",
    "Records",
    "TrustCase",
    "TrustSettings",
    "first_images",
    "mapped_cases",
]

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


def _zero_or_two(steps: int) -> str | None:
    return None if steps == 0 or steps >= 2 else f"must be 0 (skip) or at least 2, got {steps}"


@dataclass(frozen=True)
class TrustSettings:
    """How the trust checks run: one declaration per setting (see :mod:`auditor.settings`).

    They are set in the config file (or its ``[trust]`` table). ``seed`` is the run's and
    seeds every random draw.
    """

    trust_images: int = setting(
        8,
        help="Images (their predicted class) for the randomisation and stability checks, "
        "which recompute every map; 0 skips both",
        minimum=0,
    )
    randomisation_steps: int = setting(
        4,
        help="Steps of the randomisation cascade, from the output layer alone to the whole model",
        minimum=1,
    )
    deletion_steps: int = setting(
        20,
        help="Points of the deletion and insertion curves after the first (each costs one "
        "forward pass per image and method); 0 skips them",
        minimum=0,
        check=_zero_or_two,
    )
    stability_samples: int = setting(
        5, help="Noisy copies per image for the map-instability check", minimum=1
    )
    trust_budget: float = setting(
        3.0,
        help="Most passes the trust checks may take, as a multiple of the explain stage's: "
        "the costliest methods' randomisation and stability checks then run on fewer "
        "images, noisy copies or cascade steps (stated in the report); 0 runs the full "
        "protocol",
        unit="times the explain stage's passes",
        minimum=0.0,
    )
    stability_radius: float = setting(
        0.02,
        help="Bound of the uniform noise for the map-instability check",
        unit="pixel value in [0, 1]",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    localisation_top: float = setting(
        0.1,
        help="Share of the pixels (highest attribution) compared with the mask",
        unit="share of pixels",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    randomisation_threshold: float = setting(
        0.5,
        help="Rank correlation with the fully randomised model's maps at or above which a "
        "method fails",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    instability_threshold: float = setting(
        0.5,
        help="Map instability above which a method is unstable",
        minimum=0.0,
        maximum=math.inf,
        open_minimum=True,
    )
    shortcut_threshold: float = setting(
        0.5,
        help="Share of evidence outside the mask above which a group can be flagged as a shortcut",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    shortcut_concentration: float = setting(
        2.0,
        help="How many times its area share one ninth of the image must hold of the outside "
        "evidence for a group past shortcut-threshold to be flagged",
        unit="times",
        minimum=1.0,
    )
    shortcut_min_images: int = setting(
        5,
        help="Fewest explained images with a mask a group needs before it can be flagged as a "
        "shortcut; a smaller group is shown as too few to judge",
        unit="images",
        minimum=1,
    )
    seed: int = inherited("seed", 0)


@dataclass(frozen=True)
class TrustCase(Case):
    """An explained case with its image: what the checks that recompute maps read.

    Attributes:
        display: ``(C, H, W)`` image in [0, 1] (not part of the case's identity).
    """

    display: torch.Tensor = field(repr=False, compare=False)

    @classmethod
    def of(cls, case: Case, display: torch.Tensor) -> TrustCase:
        """``case`` with its ``(C, H, W)`` display image in [0, 1]."""
        return cls(case.index, case.group, case.role, case.target, display)


class Records:
    """Trust records, collected as tuples and returned as one typed frame."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []

    def add(
        self,
        case: Case,
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


def mapped_cases(explanations: Explanations) -> list[TrustCase]:
    """The explained cases with at least one map, with their images, in the stage's order.

    The images are made contiguous ``(C, H, W)``: a ``(H, W, C)`` array read back from a
    checkpoint would otherwise give channels-last strides, which the convolutions compute
    with another kernel (maps 1e-7 apart from an uninterrupted run's, measured)."""
    return [
        TrustCase.of(
            case, torch.from_numpy(explanations.images[case.index]).permute(2, 0, 1).contiguous()
        )
        for case in explanations.cases
        if explanations.maps.of(case, explanations.ran)
    ]


def first_images(cases: list[TrustCase], n: int) -> list[TrustCase]:
    """Up to ``n`` images' cases of the predicted class (a multi-label model's: the first
    label called positive), half of them misclassified where possible."""
    first: dict[int, TrustCase] = {}
    for case in cases:
        if case.role == "predicted" or case.role.startswith("predicted:"):
            first.setdefault(case.index, case)
    predicted = list(first.values())
    errors = [c for c in predicted if c.group == "misclassified"]
    others = [c for c in predicted if c.group != "misclassified"]
    n_errors = max(n // 2, n - len(others))
    return errors[:n_errors] + others[: n - min(n_errors, len(errors))]
