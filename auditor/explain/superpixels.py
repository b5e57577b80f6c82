"""SLIC superpixels (Achanta et al., 2012) via scikit-image, shared by LIME and KernelSHAP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from skimage.segmentation import slic

if TYPE_CHECKING:
    from captum.attr import Lime

    from auditor.explain.base import Batch, ExplainContext

__all__ = ["attribute_superpixels", "grid_segments", "slic_segments"]


def slic_segments(image: torch.Tensor, n_segments: int = 50) -> torch.Tensor:
    """``(H, W)`` int64 labels ``0..M-1`` of SLIC superpixels of a ``(C, H, W)`` image in [0, 1].

    Uses scikit-image's defaults for RGB (compactness 10, sigma 1, 10 iterations);
    grayscale images are segmented on their intensity. Where SLIC finds fewer than a
    quarter of the segments asked for (it can merge a noise-like image into one), a
    square grid of about ``n_segments`` cells is used instead, so that LIME and
    KernelSHAP always have features to weigh.
    """
    array = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)
    if array.shape[2] == 1:
        labels = slic(
            array[:, :, 0],
            n_segments=n_segments,
            compactness=0.1,
            sigma=1,
            start_label=0,
            channel_axis=None,
        )
    else:
        labels = slic(
            array[:, :, :3], n_segments=n_segments, compactness=10, sigma=1, start_label=0
        )
    _, dense = np.unique(labels, return_inverse=True)
    if dense.max() + 1 < max(2, n_segments // 4):
        return grid_segments(array.shape[0], array.shape[1], n_segments)
    return torch.from_numpy(dense.reshape(labels.shape).astype(np.int64))


def grid_segments(height: int, width: int, n_segments: int) -> torch.Tensor:
    """``(H, W)`` int64 labels of a square grid of about ``n_segments`` cells."""
    side = max(1, round(float(np.sqrt(height * width / max(n_segments, 1)))))
    rows = torch.arange(height) // side
    columns = torch.arange(width) // side
    per_row = int(columns.max()) + 1
    return rows.view(-1, 1) * per_row + columns.view(1, -1)


def attribute_superpixels(
    explainer: Lime,
    batch: Batch,
    context: ExplainContext,
    n_segments: int,
    n_samples: int,
) -> torch.Tensor:
    """``(B, C, H, W)`` superpixel attributions of a Captum LIME-style explainer.

    Each image is explained on its own superpixels, with its own seed (``batch.seeds``),
    so results do not depend on which images share a batch; the perturbed copies of one
    image go through the model at the measured forward batch size. The global random
    state is left as it was.
    """
    maps = []
    segments = batch.superpixels(n_segments)
    devices = [batch.inputs.device] if batch.inputs.is_cuda else []
    for i in range(len(batch.inputs)):
        image = batch.inputs[i : i + 1]
        mask = segments[i].to(image.device).view(1, 1, *image.shape[-2:]).expand_as(image)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch.seeds[i])
            maps.append(
                explainer.attribute(
                    image,
                    baselines=0.0,
                    target=batch.targets[i : i + 1],
                    feature_mask=mask,
                    n_samples=n_samples,
                    perturbations_per_eval=max(1, min(context.forward_batch, n_samples)),
                ).detach()
            )
    return torch.cat(maps)
