"""Grad-CAM++ (Chattopadhay et al., 2018).

"Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks", WACV 2018,
equations 19 and 20 with the exponential of the score, so that only first-order
gradients ``g = ∂y/∂A`` are needed::

    α_k,ij = g² / (2 g² + Σ_ab A_k,ab · g³)     (0 where the denominator is 0)
    w_k    = Σ_ij α_k,ij · relu(g_k,ij)
    map    = relu(Σ_k w_k A_k), upsampled bilinearly

Auditor's own code on the tap layer. pytorch-grad-cam adds 1e-6 to the denominator,
which is not negligible where the denominators are small (on a trained resnet18 they
can be about 4e-7, shifting its min-max maps by 0.04 to 0.10; on the random-weight
models of the tests, 0.0014 to 0.025); the tests compare with the formula above and
state that difference.
"""

from __future__ import annotations

import torch

from auditor.explain.base import ExplainContext, GradientMethod, GradientPasses


class GradCamPlusPlus(GradientMethod):
    key = "grad-cam-plus-plus"
    title = "Grad-CAM++"
    paper = "Chattopadhay et al., 2018, Grad-CAM++ (arXiv:1710.11063)"
    uses_layer = True
    postprocessing = ("relu", "upsample-bilinear")
    implementation = "Auditor (tapped layer); reference: the paper's formula by hand"
    reading = (
        "Like Grad-CAM, weighting each location's positive gradient, so several "
        "instances of a class and small regions show more fully."
    )
    caveat = "Coarse like Grad-CAM; its weights can be dominated by a few large gradients."

    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        grads, activations = passes.activation_grads, passes.activations
        squared = grads.pow(2)
        denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * grads.pow(3)
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(denominator != 0, squared / safe, torch.zeros_like(squared))
        weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
        return (weights * activations).sum(dim=1)
