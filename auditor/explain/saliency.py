"""Vanilla gradient saliency (Simonyan, Vedaldi and Zisserman, 2014).

"Deep Inside Convolutional Networks: Visualising Image Classification Models and
Saliency Maps", ICLR workshop 2014: the map is the largest absolute gradient of the
class score across colour channels, at input resolution. Auditor's own code: it is one
line on the shared gradient pass (Captum's ``Saliency`` is the numerical reference).
"""

from __future__ import annotations

import torch

from auditor.explain.base import GradientMethod, GradientPasses


class Saliency(GradientMethod):
    key = "saliency"
    title = "Gradient saliency"
    paper = "Simonyan et al., 2014, Deep Inside Convolutional Networks (arXiv:1312.6034)"
    uses_layer = False
    postprocessing = ("abs-max-over-channels",)
    reading = (
        "How much each pixel's change would move the class score. Often noisy and edge-like; "
        "it shows sensitivity, not evidence, and can look alike for every class."
    )

    def raw_map(self, passes: GradientPasses) -> torch.Tensor:
        return passes.input_grads
