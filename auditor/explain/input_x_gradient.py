"""Input × gradient (Shrikumar et al., 2016).

"Not Just a Black Box: Learning Important Features Through Propagating Activation
Differences" (arXiv:1605.01713): the input times the score's gradient, summed over
colour channels; the ReLU keeps the evidence for the class. Auditor's own code on the
shared backward pass (Captum's ``InputXGradient`` is the numerical reference).
"""

from __future__ import annotations

import torch

from auditor.explain.base import ExplainContext, GradientMethod, GradientPasses


class InputXGradient(GradientMethod):
    key = "input-x-gradient"
    title = "Input × gradient"
    paper = "Shrikumar et al., 2016, Not Just a Black Box (arXiv:1605.01713)"
    postprocessing = ("sum-over-channels", "relu")
    implementation = "Auditor (shared backward pass); reference: Captum InputXGradient"
    reading = "Pixels whose value, times the score's gradient for it, supports the class."
    caveat = (
        "Depends on how the input is normalised: pixels equal to the normalisation mean "
        "get no attribution whatever the model does with them."
    )

    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        return passes.inputs * passes.input_grads
