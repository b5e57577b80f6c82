"""Localisation of maps against region-of-interest masks, and the masks themselves.

* Pointing game (Zhang et al., 2018, "Top-down Neural Attention by Excitation
  Backprop"): a hit when a pixel of highest attribution lies inside the mask (as
  Quantus's ``PointingGame``, any of several equal maxima counts, no tolerance).
* Energy-based pointing game (Wang et al., 2020, "Score-CAM"): the share of the
  positive attribution that falls inside the mask (Quantus's
  ``AttributionLocalisation`` with ``positive_attributions=True``, ``abs=False``,
  ``weighted=False``; it gives 0 where we give NaN, for a map with no positive value).
* Top-k IoU: intersection over union of the ``k`` share of pixels with the highest
  attribution (ties in random order) with the mask.

A map spread evenly scores the mask's share of the image on the energy game and hits
the pointing game that often; both are reported as the chance level.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from PIL import Image

from auditor.images import Preprocessing, open_image
from auditor.measure.check import NOT_MEASURED, Check, Evidence, MapRun, judge
from auditor.measure.faithfulness import pixel_order
from auditor.measure.records import Records, TrustCase
from auditor.measure.similarity import mean_ci

__all__ = ["Localisation", "energy_inside", "pointing_hit", "read_mask", "top_iou"]


def read_mask(
    path: Path, image_size: tuple[int, int], preprocessing: Preprocessing
) -> torch.Tensor:
    """``(H, W)`` bool mask, preprocessed as its image (resize, crop) with nearest neighbours.

    A mask stored at another resolution than its image, with the same shape, is first
    resized to the image's; a mask of another shape is refused (it would be stretched).

    Args:
        path: A binary image (nonzero inside the region).
        image_size: ``(width, height)`` of the original image file.
        preprocessing: The images' preprocessing.

    Raises:
        OSError: The file cannot be read as an image, is larger than ``max-pixels``, or
            has another shape than its image.
    """
    with open_image(path, preprocessing.max_pixels) as opened:
        mask = opened.convert("L")
    if mask.size != image_size:
        width, height = image_size
        if abs(mask.width * height - mask.height * width) > max(width, height):
            raise OSError(
                f"the mask is {mask.width}x{mask.height} but its image is {width}x{height}: "
                f"another shape, so it cannot be scaled onto the image"
            )
        mask = mask.resize(image_size, Image.Resampling.NEAREST)
    mask = preprocessing.resize_crop(mask, Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(mask) > 0)


def pointing_hit(maps: NDArray[np.floating], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
    """1.0 where a maximum of ``maps[i]`` lies inside ``masks[i]``, else 0.0: ``(N,)``."""
    flat = maps.reshape(len(maps), -1)
    peaks = flat == flat.max(axis=1, keepdims=True)
    return (peaks & masks.reshape(len(masks), -1)).any(axis=1).astype(np.float64)


def energy_inside(maps: NDArray[np.floating], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Share of each map's positive attribution inside its mask: ``(N,)`` (NaN if none)."""
    positive = np.clip(maps.reshape(len(maps), -1).astype(np.float64), 0, None)
    total = positive.sum(axis=1)
    inside = (positive * masks.reshape(len(masks), -1)).sum(axis=1)
    return np.divide(inside, total, out=np.full(len(maps), np.nan), where=total > 0)


def top_iou(
    orders: NDArray[np.int64], masks: NDArray[np.bool_], share: float
) -> NDArray[np.float64]:
    """IoU of each map's top ``share`` of pixels with its mask: ``(N,)``.

    Args:
        orders: ``(N, H*W)`` pixel indices, highest attribution first.
        masks: ``(N, H, W)`` masks.
        share: Share of the pixels taken, in (0, 1].
    """
    flat = masks.reshape(len(masks), -1)
    k = max(1, round(share * flat.shape[1]))
    top = np.zeros_like(flat)
    np.put_along_axis(top, orders[:, :k], True, axis=1)
    union = (top | flat).sum(axis=1)
    return (top & flat).sum(axis=1) / union


class Localisation(Check):
    """Where the data has masks: pointing game, energy inside the mask and top-k IoU of
    every map; *localises* when the 95% CI of the energy inside the mask minus the mask's
    share of the image lies above 0, *misses* when below, else *inconclusive*."""

    key = "localisation"
    title = "Localisation"
    columns: ClassVar[dict[str, str]] = {
        "pointing_game": "float64",
        "energy_in_mask": "float64",
        "energy_in_mask_low": "float64",
        "energy_in_mask_high": "float64",
        "mask_area": "float64",
        "top_iou": "float64",
        "localisation": "string",
    }

    def measure_case(
        self,
        run: MapRun,
        case: TrustCase,
        target: str,
        maps: dict[str, np.ndarray],
        records: Records,
    ) -> None:
        if case.index not in run.masks:
            return
        mask = run.masks[case.index]
        if isinstance(mask, str):
            records.add(case, target, "mask", "mask_area", np.nan, status="skipped", detail=mask)
            return
        records.add(case, target, "mask", "mask_area", float(mask.mean()))
        if not maps:
            return
        stacked = np.stack(list(maps.values()))
        masks = np.broadcast_to(mask, stacked.shape)
        generator = torch.Generator().manual_seed(run.settings.seed + case.index)
        orders = pixel_order(torch.from_numpy(stacked.astype(np.float32)), generator).numpy()
        hits = pointing_hit(stacked, masks)
        energy = energy_inside(stacked, masks)
        iou = top_iou(orders, masks, run.settings.localisation_top)
        for n, key in enumerate(maps):
            records.add(case, target, key, "pointing_game", float(hits[n]))
            records.add(case, target, key, "energy", float(energy[n]))
            records.add(case, target, key, "top_iou", float(iou[n]))

    def summarise(self, evidence: Evidence, method: str) -> dict[str, object]:
        energy = evidence.values(method, "energy")
        mask_area = evidence.values("mask", "mask_area").reindex(energy.index)
        inside = mean_ci(energy.to_numpy(), evidence.seed)
        above_chance = mean_ci((energy - mask_area).to_numpy(), evidence.seed)
        values = (
            evidence.values(method, "pointing_game").mean(),
            *inside,
            mask_area.mean(),
            evidence.values(method, "top_iou").mean(),
            judge(above_chance[1], above_chance[2], "localises", "misses", "inconclusive"),
        )
        return dict(zip(self.columns, values, strict=True))

    def describe(self, row: pd.Series) -> str:
        if row["localisation"] == NOT_MEASURED:
            return "no masks"
        return (
            f"{row['localisation']}: {row['energy_in_mask']:.0%} of evidence in "
            f"{row['mask_area']:.0%} of the image; pointing game {row['pointing_game']:.0%}"
        )
