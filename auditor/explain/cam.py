"""Class activation mapping, CAM (Zhou et al., 2016).

"Learning Deep Features for Discriminative Localization", CVPR 2016: for a head that
is global average pooling followed by a linear layer, the map of class ``c`` is
``Σ_k W[c, k] · A_k`` over the pooled feature map ``A``, upsampled bilinearly. The head
is found in the TorchScript graph (:mod:`auditor.taps.head`); any other head makes CAM
not applicable. Auditor's own code (no library reads a TorchScript head); the tests
check it against the eager twin's pooled features and against Grad-CAM, which equals
``relu(CAM) / (h·w)`` on such a head.
"""

from __future__ import annotations

import torch

from auditor.explain.base import ExplainContext, GradientMethod, GradientPasses
from auditor.load import OutputKind


class Cam(GradientMethod):
    key = "cam"
    title = "CAM"
    paper = "Zhou et al., 2016, Learning Deep Features for Discriminative Localization"
    needs_head = True
    needs_gradients = False
    postprocessing = ("upsample-bilinear",)
    implementation = "Auditor (head read from the graph)"
    reading = (
        "The class's linear weights applied to the last feature map: where the features "
        "the classifier weighs for this class are."
    )
    caveat = "Only at the last feature map's resolution; negative evidence is kept."

    def not_applicable(self, context: ExplainContext) -> str | None:
        head, reason = context.model.tapped.linear_head
        if head is None:
            return f"needs a global-average-pooling + linear head; here {reason}"
        if context.kind.probabilities:
            return "needs logits, but the model outputs probabilities"
        return None

    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        if context.head is None:
            raise RuntimeError("CAM ran without the GAP + linear head tapped")
        features = passes.head_features
        weight = context.head.weight.to(features.device, features.dtype)
        if context.kind is OutputKind.BINARY_LOGIT:  # class 1: z, class 0: -z
            sign = passes.targets.to(weight.dtype) * 2 - 1
            class_weights = sign.view(-1, 1) * weight[0]
        else:
            class_weights = weight[passes.targets]
        return torch.einsum("bk,bkhw->bhw", class_weights, features)
