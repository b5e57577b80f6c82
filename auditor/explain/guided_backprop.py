"""Guided backpropagation (Springenberg et al., 2015).

"Striving for Simplicity: The All Convolutional Net", ICLR workshop 2015: the input
gradient with every ReLU's backward pass keeping only positive gradients. Auditor's
own code: every ReLU output (module or functional) is tapped from the TorchScript graph
and a tensor hook clamps its gradient in a second backward pass shared with guided
Grad-CAM. Captum's ``GuidedBackprop`` hooks ``nn.ReLU`` modules, which a TorchScript
model does not expose: on one it silently returns the plain gradient (relative
difference 0.86 to 0.96 from the eager result), so it is only the reference on the eager twin.
"""

from __future__ import annotations

import torch

from auditor.explain.base import ExplainContext, GradientMethod, GradientPasses


class GuidedBackprop(GradientMethod):
    key = "guided-backprop"
    title = "Guided backpropagation"
    paper = "Springenberg et al., 2015, Striving for Simplicity (arXiv:1412.6806)"
    postprocessing = ("abs-max-over-channels",)
    implementation = "Auditor (guided backward pass on tapped ReLUs); reference: Captum"
    needs_guided = True
    reading = "Fine image structure that activates the network along positive paths."
    caveat = (
        "Barely changes with the target class or with the model's weights (Adebayo et "
        "al., 2018): it behaves much like an edge detector, so it cannot show what the "
        "model uses to decide."
    )

    def not_applicable(self, context: ExplainContext) -> str | None:
        if not context.model.tapped.relu_addresses():
            return "the model has no ReLU, so guided backpropagation is the plain gradient"
        return None

    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        return passes.guided_input_grads
