"""Occlusion (Zeiler and Fergus, 2014).

"Visualizing and Understanding Convolutional Networks", ECCV 2014: a square of the
baseline value (zero in the model's input space, i.e. the normalisation mean) slides
over the image; each pixel's attribution is the mean drop of the target score over the
windows that cover it. Captum's ``Occlusion`` runs correctly on a TorchScript forward
and costs little over its passes, so Auditor calls it, with as many occluded copies
per forward pass as the measured batch size allows across the batch's images.
"""

from __future__ import annotations

import torch
from captum.attr import Occlusion as CaptumOcclusion

from auditor.explain.base import Batch, ExplainContext, Method, PassCount


class Occlusion(Method):
    key = "occlusion"
    title = "Occlusion"
    paper = "Zeiler and Fergus, 2014, Visualizing and Understanding CNNs (arXiv:1311.2901)"
    postprocessing = ("mean-over-channels", "relu")
    implementation = "Captum Occlusion on the model's forward"
    perturbation = True
    reading = "How much the class score drops when each region is hidden."
    caveat = (
        "The result depends on the window size and on the fill value; regions smaller "
        "than the window, or redundant ones, show little."
    )

    def window(self, height: int, width: int) -> tuple[int, int]:
        """Window side and stride in pixels for an image of that size."""
        side = self.settings.occlusion_window or max(2, min(height, width) // 8)
        return side, self.settings.occlusion_stride or max(1, side // 2)

    def settings_text(self) -> str:
        if self.settings.occlusion_window is None:
            return "window 1/8 of the image side, stride half the window, zero fill"
        side = self.settings.occlusion_window
        stride = self.settings.occlusion_stride or max(1, side // 2)
        return f"window {side} px, stride {stride} px, zero fill"

    def passes_per_image(self, context: ExplainContext, size: tuple[int, int]) -> PassCount:
        return PassCount(forward=self.windows(*size) + 1)

    def windows(self, height: int, width: int) -> int:
        """Occluded copies per image."""
        side, stride = self.window(height, width)
        return ((height - side) // stride + 1) * ((width - side) // stride + 1)

    @torch.no_grad()
    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        channels, height, width = batch.inputs.shape[1:]
        side, stride = self.window(int(height), int(width))
        return CaptumOcclusion(context.class_scores).attribute(
            batch.inputs,
            sliding_window_shapes=(int(channels), side, side),
            strides=(int(channels), stride, stride),
            baselines=0.0,
            target=batch.targets,
            perturbations_per_eval=max(1, context.forward_batch // len(batch.inputs)),
        )
