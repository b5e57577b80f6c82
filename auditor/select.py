"""Select stage: which images to explain.

A seeded random sample stratified by true class, and the misclassified images, most
confident errors first (the ones a reviewer must see).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Selection", "select_cases"]


@dataclass(frozen=True)
class Selection:
    """Rows of the predictions table to explain.

    Attributes:
        sampled: Sample indices of the stratified random sample, grouped by class.
        misclassified: Sample indices of errors, by decreasing confidence.
        n_errors: How many misclassified images there are in total.
    """

    sampled: tuple[int, ...]
    misclassified: tuple[int, ...]
    n_errors: int

    def images(self) -> list[tuple[str, int]]:
        """``(group, sample index)`` of every image to explain, misclassified first; an
        image both misclassified and sampled is listed once, as misclassified."""
        found = {i: "misclassified" for i in self.misclassified}
        found |= {i: "sampled" for i in self.sampled if i not in found}
        return [(group, index) for index, group in found.items()]


def select_cases(
    predictions: pd.DataFrame, classes: tuple[str, ...], limit: int, seed: int
) -> Selection:
    """Choose up to ``limit`` sampled and up to ``limit`` misclassified images.

    The sample gives each class ``limit // K`` places (the first ``limit % K`` classes one
    more); places a small class cannot fill go to the others, so the sample has
    ``min(limit, N)`` images.

    Args:
        predictions: The evaluation's predictions table (``index``, ``label``,
            ``confidence``, ``correct``).
        classes: Class names, in order.
        limit: ``--explain-samples``.
        seed: Sampling seed.
    """
    errors = predictions.loc[~predictions["correct"]].sort_values(
        ["confidence", "index"], ascending=[False, True], kind="stable"
    )
    rng = np.random.default_rng(seed)
    pools = {
        name: rng.permutation(
            predictions.loc[predictions["label"] == name, "index"].to_numpy(copy=True)
        )
        for name in classes
    }
    quota = {name: 0 for name in classes}
    remaining = min(limit, len(predictions))
    while remaining > 0:
        open_classes = [c for c in classes if quota[c] < len(pools[c])]
        if not open_classes:
            break
        for name in open_classes[:remaining]:
            quota[name] += 1
            remaining -= 1
    sampled = tuple(int(i) for name in classes for i in sorted(pools[name][: quota[name]]))
    return Selection(
        sampled=sampled,
        misclassified=tuple(int(i) for i in errors["index"].head(limit)),
        n_errors=len(errors),
    )
