"""Map instability (Yeh et al., 2019): how far a map moves under small input noise.

"On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019:
``max over δ of ‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖`` for noise ``δ`` drawn uniformly from
``[−r, r]`` per pixel value (on the image in [0, 1], before normalisation), with
Frobenius norms and each map first divided by its own largest absolute value (Quantus's
``MaxSensitivity`` with ``normalise=True`` and ``normalise_axes=(1, 2, 3)``; its default
does not normalise, and ``normalise=True`` alone scales by the batch's largest value).
The explained class stays the same under noise, and the methods that sample (LIME,
KernelSHAP, SmoothGrad) draw the same perturbations as for the original image, so only
the input differs. Checked against ``quantus.MaxSensitivity`` on the same noise
(``tests/test_trust_reference.py``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from auditor.measure.check import NOT_MEASURED, Check, Evidence
from auditor.measure.similarity import mean_ci

__all__ = ["Stability", "map_instability", "noisy_copies"]


def noisy_copies(
    display: torch.Tensor, samples: int, radius: float, generator: torch.Generator
) -> torch.Tensor:
    """``(samples, C, H, W)`` copies of a ``(C, H, W)`` image with uniform noise in ``[−r, r]``."""
    noise = (torch.rand((samples, *display.shape), generator=generator) * 2 - 1) * radius
    return display.unsqueeze(0) + noise


def _unit(maps: NDArray[np.floating]) -> NDArray[np.float64]:
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    scale = np.abs(flat).max(axis=1, keepdims=True)
    return np.divide(flat, scale, out=np.zeros_like(flat), where=scale > 0)


def map_instability(original: NDArray[np.floating], noisy: NDArray[np.floating]) -> float:
    """Map instability of one map: ``original`` ``(H, W)``, ``noisy`` ``(samples, H, W)``.

    NaN when the original map is zero everywhere (the ratio has no scale).
    """
    base = _unit(original[None])[0]
    norm = float(np.linalg.norm(base))
    if norm == 0:
        return float("nan")
    moved = np.linalg.norm(_unit(noisy) - base[None], axis=1)
    return float(moved.max() / norm)


class Stability(Check):
    """*Unstable* when the mean map instability exceeds ``instability-threshold``. Measured
    by the measure stage's stability step (it recomputes maps of noisy copies)."""

    key = "stability"
    title = "Stability"
    columns: ClassVar[dict[str, str]] = {
        "map_instability": "float64",
        "map_instability_low": "float64",
        "map_instability_high": "float64",
        "stability": "string",
    }

    def summarise(self, evidence: Evidence, method: str) -> dict[str, object]:
        values = evidence.values(method, "map_instability").to_numpy()
        mean, low, high = mean_ci(values, evidence.seed)
        judged = (
            NOT_MEASURED
            if np.isnan(mean)
            else "unstable"
            if mean > evidence.instability_threshold
            else "stable"
        )
        return dict(zip(self.columns, (mean, low, high, judged), strict=True))

    def describe(self, row: pd.Series) -> str:
        if row["stability"] == NOT_MEASURED:
            return NOT_MEASURED
        return f"{row['stability']} ({row['map_instability']:.2f})"
