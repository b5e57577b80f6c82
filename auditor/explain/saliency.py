"""Vanilla gradient saliency (Simonyan, Vedaldi and Zisserman, 2014).

"Deep Inside Convolutional Networks: Visualising Image Classification Models and
Saliency Maps", ICLR workshop 2014: the map is the largest absolute gradient of the
class score across colour channels, at input resolution. Auditor's own code: it is one
line on the shared gradient pass (Captum's ``Saliency`` is the numerical reference).
"""

from __future__ import annotations

import torch

from auditor.explain.base import ExplainContext, GradientMethod, GradientPasses


class Saliency(GradientMethod):
    key = "saliency"
    title = "Gradient saliency"
    paper = "Simonyan et al., 2014, Deep Inside Convolutional Networks (arXiv:1312.6034)"
    postprocessing = ("abs-max-over-channels",)
    implementation = "Auditor (shared backward pass); reference: Captum Saliency"
    reading = "How much a small change of each pixel would move the class score."
    caveat = (
        "Noisy and edge-like; shows where the score responds, not evidence, and often looks "
        "alike for every class."
    )

    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        return passes.input_grads
