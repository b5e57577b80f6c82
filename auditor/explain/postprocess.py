"""Post-processing steps of attribution maps, each a named function.

Every method lists the steps it applies, in order, so the report can state them:
e.g. Grad-CAM is ``relu → upsample-bilinear`` and then ``min-max`` for display.
The map saved in ``explanations.npz`` is the one before ``min-max``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "STEPS",
    "abs_max_over_channels",
    "mean_over_channels",
    "minmax",
    "relu",
    "sum_over_channels",
    "upsample_bilinear",
]


def relu(maps: torch.Tensor) -> torch.Tensor:
    """Keep positive evidence: ``max(map, 0)``. Shape kept."""
    return maps.clamp(min=0)


def abs_max_over_channels(maps: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H, W)``: largest absolute value over channels (Simonyan et al.)."""
    return maps.abs().amax(dim=1)


def sum_over_channels(maps: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H, W)``: sum over channels (keeps IG's completeness)."""
    return maps.sum(dim=1)


def mean_over_channels(maps: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H, W)``: mean over channels (for maps equal across them)."""
    return maps.mean(dim=1)


def upsample_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` → ``(B, H, W)`` by bilinear interpolation (``align_corners=False``)."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(
        maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False
    ).squeeze(1)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Rescale each ``(H, W)`` map of ``(B, H, W)`` to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    span = flat.max(dim=1).values.view(-1, 1, 1) - low
    return torch.where(
        span > 0,
        (maps - low) / span.clamp(min=torch.finfo(maps.dtype).tiny),
        torch.zeros_like(maps),
    )


STEPS: dict[str, Callable[..., torch.Tensor]] = {
    "relu": relu,
    "abs-max-over-channels": abs_max_over_channels,
    "sum-over-channels": sum_over_channels,
    "mean-over-channels": mean_over_channels,
    "upsample-bilinear": upsample_bilinear,
    "min-max": minmax,
}
