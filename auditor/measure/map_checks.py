"""The checks read from the maps themselves: faithfulness, localisation, sparseness, agreement."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.stats import rankdata

from auditor.explain import ExplainContext
from auditor.images import Preprocessing
from auditor.load import first_line
from auditor.measure.faithfulness import area, curves, pixel_order
from auditor.measure.localisation import energy_inside, pointing_hit, read_mask, top_iou
from auditor.measure.records import Records, TrustCase, TrustSettings
from auditor.measure.similarity import gini

__all__ = [
    "CurveSums",
    "agreement",
    "case_maps",
    "faithfulness_check",
    "load_masks",
    "localisation_check",
    "sparseness_check",
]

Maps = Mapping[tuple[int, str, str], np.ndarray]


def case_maps(case: TrustCase, maps: Maps, methods: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Method → the case's map, for the methods that produced one."""
    found = {m: maps.get((case.index, case.role, m)) for m in methods}
    return {m: found_map for m, found_map in found.items() if found_map is not None}


class CurveSums:
    """Running sums of deletion and insertion curves per method, for their means."""

    def __init__(self) -> None:
        self.sums: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.counts: dict[str, int] = {}

    def add(self, method: str, deletion: np.ndarray, insertion: np.ndarray) -> None:
        old = self.sums.get(method, (np.zeros_like(deletion), np.zeros_like(insertion)))
        self.sums[method] = (old[0] + deletion, old[1] + insertion)
        self.counts[method] = self.counts.get(method, 0) + 1

    def means(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {m: (d / self.counts[m], i / self.counts[m]) for m, (d, i) in self.sums.items()}


def faithfulness_check(
    context: ExplainContext,
    case: TrustCase,
    target: str,
    found: dict[str, np.ndarray],
    settings: TrustSettings,
    records: Records,
    sums: CurveSums,
) -> None:
    """Deletion and insertion areas of each map of one case, and of a random ranking."""
    generator = torch.Generator().manual_seed(settings.seed + case.index)
    height, width = case.display.shape[-2:]
    keys = [*found, "random"]
    maps = torch.stack(
        [torch.from_numpy(np.asarray(m, dtype=np.float32)) for m in found.values()]
        + [torch.rand((height, width), generator=generator)]
    )
    orders = pixel_order(maps, generator)
    deletion, insertion = curves(
        context, case.display, case.target, orders, settings.deletion_steps
    )
    for key, d, i in zip(keys, deletion, insertion, strict=True):
        records.add(case, target, key, "deletion_auc", float(area(d)))
        records.add(case, target, key, "insertion_auc", float(area(i)))
        sums.add(key, d, i)


def load_masks(
    cases: list[TrustCase],
    paths: Mapping[int, tuple[Path, Path | None]],
    preprocessing: Preprocessing,
) -> dict[int, np.ndarray | str]:
    """Sample index → ``(H, W)`` bool mask (or why it cannot be used), for cases with one.

    Args:
        cases: The cases.
        paths: Sample index → (image path, mask path or ``None``).
        preprocessing: The images' preprocessing.
    """
    masks: dict[int, np.ndarray | str] = {}
    for case in cases:
        image_path, mask_path = paths[case.index]
        if mask_path is None or case.index in masks:
            continue
        try:
            with Image.open(image_path) as image:
                size = image.size
            mask = read_mask(mask_path, size, preprocessing).numpy()
        except OSError as error:
            masks[case.index] = f"the mask {mask_path.name!r} cannot be read ({first_line(error)})"
            continue
        if mask.shape != tuple(case.display.shape[-2:]):
            masks[case.index] = (
                f"the mask is {mask.shape} after preprocessing but the image is "
                f"{tuple(case.display.shape[-2:])}"
            )
        elif not mask.any():
            masks[case.index] = "the mask is empty"
        else:
            masks[case.index] = mask
    return masks


def localisation_check(
    case: TrustCase,
    target: str,
    found: dict[str, np.ndarray],
    mask: np.ndarray | str,
    settings: TrustSettings,
    records: Records,
) -> None:
    """Pointing game, energy inside the mask and top-k IoU of each map of one case."""
    if isinstance(mask, str):
        records.add(case, target, "mask", "mask_area", np.nan, status="skipped", detail=mask)
        return
    records.add(case, target, "mask", "mask_area", float(mask.mean()))
    if not found:
        return
    maps = np.stack(list(found.values()))
    masks = np.broadcast_to(mask, maps.shape)
    generator = torch.Generator().manual_seed(settings.seed + case.index)
    orders = pixel_order(torch.from_numpy(maps.astype(np.float32)), generator).numpy()
    hits = pointing_hit(maps, masks)
    energy = energy_inside(maps, masks)
    iou = top_iou(orders, masks, settings.localisation_top)
    for n, key in enumerate(found):
        records.add(case, target, key, "pointing_game", float(hits[n]))
        records.add(case, target, key, "energy", float(energy[n]))
        records.add(case, target, key, "top_iou", float(iou[n]))


def sparseness_check(
    case: TrustCase, target: str, found: dict[str, np.ndarray], records: Records
) -> None:
    """Gini index of each map of one case."""
    if found:
        for key, value in zip(found, gini(np.stack(list(found.values()))), strict=True):
            records.add(case, target, key, "gini", float(value))


def agreement(per_case: list[dict[str, np.ndarray]], methods: tuple[str, ...]) -> pd.DataFrame:
    """Methods × methods mean Spearman correlation of absolute maps over the cases."""
    sums = np.zeros((len(methods), len(methods)))
    counts = np.zeros_like(sums)
    for found in per_case:
        present = [methods.index(m) for m in found]
        if len(present) < 2:
            continue
        ranks = rankdata(np.abs(np.stack(list(found.values()))).reshape(len(found), -1), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.corrcoef(ranks)
        grid = np.ix_(present, present)
        finite = np.isfinite(matrix)
        sums[grid] += np.where(finite, matrix, 0)
        counts[grid] += finite
    mean = np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)
    return pd.DataFrame(mean, index=list(methods), columns=list(methods))
