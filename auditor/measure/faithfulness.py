"""Deletion and insertion curves (Petsiuk, Das and Saenko, 2018).

"RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018. Pixels
are ranked by attribution, most positive first (ties in random order, so that a flat
map is not read in raster order). *Deletion* replaces the top ``k/S`` of the pixels
with black and follows the probability of the explained class; a faithful map makes it
fall fast (low area under the curve). *Insertion* starts from the image blurred and
puts the top pixels back; a faithful map makes it rise fast (high area). A random
ranking of the same image gives the baseline curves.

Own code: Quantus's ``PixelFlipping`` computes the deletion curve one step at a time
over a batch of images, one map per image; here the steps of all methods of an image
run in shared batches at the measured forward batch size, and the two end points of
each curve (the image, and the image fully deleted or blurred) are the same for every
method, so they run once. The curves match ``quantus.PixelFlipping``
(``tests/test_trust_reference.py``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from auditor.explain import ExplainContext
from auditor.explain.integrated_gradients import blurred
from auditor.load import to_probabilities
from auditor.measure.check import NOT_MEASURED, Check, Evidence, MapRun, judge
from auditor.measure.records import Records, TrustCase
from auditor.measure.similarity import mean_ci

__all__ = ["Faithfulness", "area", "curves", "pixel_order"]


def pixel_order(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(M, H*W)`` pixel indices of each ``(M, H, W)`` map, highest attribution first.

    Equal attributions come in an order drawn from ``generator``.
    """
    flat = maps.reshape(len(maps), -1)
    shuffle = torch.randperm(flat.shape[1], generator=generator)
    order = torch.argsort(-flat[:, shuffle], dim=1, stable=True)
    return shuffle[order]


def _probabilities(context: ExplainContext, images: torch.Tensor, target: int) -> torch.Tensor:
    """``(N,)`` probability of ``target`` for ``(N, C, H, W)`` images in [0, 1]."""
    out = []
    step = max(1, context.forward_batch)
    with torch.no_grad():
        for start in range(0, len(images), step):
            chunk = context.normalise(images[start : start + step].to(context.model.device))
            output = context.model.module(chunk)
            out.append(to_probabilities(output, context.kind)[:, target].cpu())
    return torch.cat(out)


def curves(
    context: ExplainContext,
    display: torch.Tensor,
    target: int,
    orders: torch.Tensor,
    steps: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Deletion and insertion curves of one image for several pixel orders.

    Args:
        context: The model.
        display: ``(C, H, W)`` image in [0, 1] on the CPU.
        target: Class whose probability is followed.
        orders: ``(M, H*W)`` pixel orders (from :func:`pixel_order`).
        steps: ``S``: the curves have ``S + 1`` points, at ``0, 1/S, ..., 1`` of the pixels.

    Returns:
        ``(deletion, insertion)``, each ``(M, S + 1)`` probabilities.
    """
    channels, height, width = display.shape
    n_pixels = height * width
    flat = display.reshape(channels, n_pixels)
    black = torch.zeros_like(flat)
    blur = blurred(display).reshape(channels, n_pixels)
    counts = torch.round(torch.arange(1, steps) * n_pixels / steps).long()  # interior points
    rank = torch.empty_like(orders)
    rank.scatter_(1, orders, torch.arange(n_pixels).expand_as(orders).contiguous())
    chosen = rank[:, None, :] < counts[None, :, None]  # (M, S-1, H*W): pixels changed
    chosen = chosen[:, :, None, :]
    deleted = torch.where(chosen, black, flat)
    inserted = torch.where(chosen, flat, blur)
    images = torch.cat([deleted, inserted]).reshape(-1, channels, height, width)
    ends = torch.stack([flat, black, blur]).reshape(3, channels, height, width)
    scores = _probabilities(context, torch.cat([ends, images]), target).double()
    original, all_deleted, all_blurred = scores[:3]
    interior = scores[3:].reshape(2, len(orders), steps - 1)
    m = len(orders)
    deletion = torch.cat([original.expand(m, 1), interior[0], all_deleted.expand(m, 1)], dim=1)
    insertion = torch.cat([all_blurred.expand(m, 1), interior[1], original.expand(m, 1)], dim=1)
    return deletion.numpy(), insertion.numpy()


def area(curve: NDArray[np.float64]) -> NDArray[np.float64]:
    """Area under ``(..., S + 1)`` curves on ``[0, 1]`` (trapezoids)."""
    steps = curve.shape[-1] - 1
    return (curve[..., :-1] + curve[..., 1:]).sum(axis=-1) / (2 * steps)


class Faithfulness(Check):
    """Deletion and insertion areas of every map and of a random ranking of the same image;
    *better than random* when the 95% CI of the per-map gain over the random ranking
    (insertion − deletion, method minus random) lies above 0, *worse than random* when
    below, otherwise *not distinguishable*. ``deletion-steps`` 0 skips it."""

    key = "faithfulness"
    title = "Faithfulness vs random"
    columns: ClassVar[dict[str, str]] = {
        "deletion_auc": "float64",
        "insertion_auc": "float64",
        "random_deletion_auc": "float64",
        "random_insertion_auc": "float64",
        "faithfulness_gain": "float64",
        "faithfulness_gain_low": "float64",
        "faithfulness_gain_high": "float64",
        "faithfulness": "string",
    }

    def measure_case(
        self,
        run: MapRun,
        case: TrustCase,
        target: str,
        maps: dict[str, np.ndarray],
        records: Records,
    ) -> None:
        settings = run.settings
        if settings.deletion_steps == 0:
            return
        generator = torch.Generator().manual_seed(settings.seed + case.index)
        height, width = case.display.shape[-2:]
        keys = [*maps, "random"]
        stacked = torch.stack(
            [torch.from_numpy(np.asarray(m, dtype=np.float32)) for m in maps.values()]
            + [torch.rand((height, width), generator=generator)]
        )
        orders = pixel_order(stacked, generator)
        deletion, insertion = curves(
            run.context, case.display, case.target, orders, settings.deletion_steps
        )
        for key, d, i in zip(keys, deletion, insertion, strict=True):
            records.add(case, target, key, "deletion_auc", float(area(d)))
            records.add(case, target, key, "insertion_auc", float(area(i)))
            run.add_curves(key, d, i)

    def summarise(self, evidence: Evidence, method: str) -> dict[str, object]:
        deletion = evidence.values(method, "deletion_auc")
        insertion = evidence.values(method, "insertion_auc")
        random_deletion = evidence.values("random", "deletion_auc")
        random_insertion = evidence.values("random", "insertion_auc")
        gain = ((insertion - deletion) - (random_insertion - random_deletion)).dropna()
        mean, low, high = mean_ci(gain.to_numpy(), evidence.seed)
        judged = judge(
            low, high, "better than random", "worse than random", "not distinguishable from random"
        )
        values = (
            deletion.mean(),
            insertion.mean(),
            random_deletion.reindex(deletion.index).mean(),
            random_insertion.reindex(insertion.index).mean(),
            mean,
            low,
            high,
            judged,
        )
        return dict(zip(self.columns, values, strict=True))

    def describe(self, row: pd.Series) -> str:
        if row["faithfulness"] == NOT_MEASURED:
            return NOT_MEASURED
        return (
            f"{row['faithfulness']}: gain {row['faithfulness_gain']:+.3f} "
            f"({row['faithfulness_gain_low']:+.3f} to {row['faithfulness_gain_high']:+.3f})"
        )
