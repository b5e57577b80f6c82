"""Grad-CAM (Selvaraju et al., 2017).

"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017: channel weights are the spatial mean of the score's gradient w.r.t. the
target layer's output; the map is the ReLU of the weighted channel sum, upsampled
bilinearly to the input. Auditor's own code on the tap layer, since Captum's
``LayerGradCam`` and pytorch-grad-cam need module hooks, which TorchScript rejects
(both are the numerical references on the eager twin in the tests).
"""

from __future__ import annotations

import torch

from auditor.explain.base import ExplainContext, GradientMethod, GradientPasses


def grad_cam(passes: GradientPasses) -> torch.Tensor:
    """``(B, h, w)`` Grad-CAM before ReLU: Σ_k mean(∂y/∂A_k) · A_k."""
    weights = passes.activation_grads.mean(dim=(2, 3), keepdim=True)
    return (weights * passes.activations).sum(dim=1)


class GradCam(GradientMethod):
    key = "grad-cam"
    title = "Grad-CAM"
    paper = "Selvaraju et al., 2017, Grad-CAM (arXiv:1610.02391)"
    uses_layer = True
    postprocessing = ("relu", "upsample-bilinear")
    implementation = "Auditor (tapped layer); references: Captum LayerGradCam, pytorch-grad-cam"
    reading = "Regions of the target layer whose features raise the class score."
    caveat = (
        "Coarse (the layer's resolution): it can miss small structures, spill over "
        "neighbours, and shows only positive evidence."
    )

    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        return grad_cam(passes)
