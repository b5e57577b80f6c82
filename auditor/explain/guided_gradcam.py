"""Guided Grad-CAM (Selvaraju et al., 2017).

The element-wise product of guided backpropagation and the Grad-CAM map upsampled
bilinearly to the input (section 3.1 of the Grad-CAM paper), then the largest absolute
value over colour channels. Auditor's own code: both factors come from the shared
passes. Captum's ``GuidedGradCam`` (with ``interpolate_mode="bilinear"``) is the
reference on the eager twin.
"""

from __future__ import annotations

import torch

from auditor.explain.base import ExplainContext, GradientMethod, GradientPasses
from auditor.explain.gradcam import grad_cam
from auditor.explain.guided_backprop import GuidedBackprop
from auditor.explain.postprocess import relu, upsample_bilinear


class GuidedGradCam(GradientMethod):
    key = "guided-grad-cam"
    title = "Guided Grad-CAM"
    paper = "Selvaraju et al., 2017, Grad-CAM (arXiv:1610.02391), section 3.1"
    uses_layer = True
    needs_guided = True
    postprocessing = ("abs-max-over-channels",)
    implementation = "Auditor (shared passes); reference: Captum GuidedGradCam"
    reading = "Fine structure (guided backpropagation) inside the regions Grad-CAM marks."
    caveat = (
        "Inherits guided backpropagation's blindness to the model's weights; the class "
        "dependence comes from the Grad-CAM factor only."
    )

    def not_applicable(self, context: ExplainContext) -> str | None:
        return super().not_applicable(context) or GuidedBackprop(self.settings).not_applicable(
            context
        )

    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        size = (int(passes.inputs.shape[-2]), int(passes.inputs.shape[-1]))
        cam = upsample_bilinear(relu(grad_cam(passes)), size)
        return passes.guided_input_grads * cam.unsqueeze(1)
