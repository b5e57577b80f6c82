"""What the checks read from the maps share: the masks, and the agreement between methods."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from auditor.images import Preprocessing, open_image
from auditor.load import first_line
from auditor.measure.localisation import read_mask
from auditor.measure.records import TrustCase

__all__ = ["agreement", "load_masks"]


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
            with open_image(image_path, preprocessing.max_pixels) as image:
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
