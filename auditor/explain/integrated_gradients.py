"""Integrated gradients (Sundararajan, Taly and Yan, 2017).

"Axiomatic Attribution for Deep Networks", ICML 2017: ``(x - x') · ∫ ∂y/∂x(x' + t(x - x')) dt``
from a baseline ``x'`` (black, blurred, or the mean colour), by Gauss-Legendre
quadrature; summed over colour channels (so that the map sums to ``y(x) - y(x')``,
completeness), then the ReLU keeps the evidence for the class. Captum's
``IntegratedGradients`` runs correctly on a TorchScript forward (it needs no hooks) and
costs little over its passes, so Auditor calls it, with the steps of all images of a
batch chunked at the measured forward+backward batch size.
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from torchvision.transforms.functional import gaussian_blur

from auditor.explain.base import Batch, ExplainContext, Method, PassCount


def blurred(display: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W)`` images blurred by a Gaussian with sigma 1/20 of the longer side."""
    sigma = max(display.shape[-2:]) / 20
    kernel = 2 * int(2 * sigma) + 1
    return gaussian_blur(display, [kernel, kernel], [sigma, sigma])


def ig_baseline(batch: Batch, context: ExplainContext, kind: str) -> torch.Tensor:
    """The ``(B, C, H, W)`` baseline ``x'`` in the model's normalised input space."""
    display = batch.display
    if kind == "black":
        pixels = torch.zeros_like(display)
    elif kind == "blur":
        pixels = blurred(display)
    else:
        if context.mean_colour is None:
            raise RuntimeError("the mean colour of the explained images was not set")
        pixels = context.mean_colour.view(1, -1, 1, 1).expand_as(display)
    return context.normalise(pixels.to(batch.inputs.device))


class IntegratedGradients(Method):
    key = "integrated-gradients"
    title = "Integrated gradients"
    paper = "Sundararajan et al., 2017, Axiomatic Attribution for Deep Networks (arXiv:1703.01365)"
    postprocessing = ("sum-over-channels", "relu")
    implementation = "Captum IntegratedGradients on the model's forward"
    perturbation = True
    reading = (
        "Pixels whose change from the baseline image accounts for the class score; "
        "the attributions add up to the score's difference from the baseline."
    )
    caveat = (
        "Depends on the baseline: features that equal the baseline (black regions with "
        "a black baseline) get no attribution."
    )

    def settings_text(self) -> str:
        return f"{self.settings.ig_steps} steps, {self.settings.ig_baseline} baseline"

    def passes_per_image(self, context: ExplainContext, size: tuple[int, int]) -> PassCount:
        return PassCount(backward=self.settings.ig_steps)

    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        baseline = ig_baseline(batch, context, self.settings.ig_baseline)
        explainer = CaptumIntegratedGradients(context.class_scores)
        # Captum needs at least as many examples per pass as images: chunk the images.
        step = context.backward_batch
        return torch.cat(
            [
                explainer.attribute(
                    batch.inputs[i : i + step],
                    baselines=baseline[i : i + step],
                    target=batch.targets[i : i + step],
                    n_steps=self.settings.ig_steps,
                    internal_batch_size=step,
                ).detach()
                for i in range(0, len(batch.inputs), step)
            ]
        )
