"""KernelSHAP over SLIC superpixels (Lundberg and Lee, 2017).

"A Unified Approach to Interpreting Model Predictions", NeurIPS 2017: Shapley values
of the superpixels, estimated by a linear regression on random coalitions weighted by
the Shapley kernel; absent superpixels are set to zero in the model's input space (the
normalisation mean). Captum's ``KernelShap`` runs correctly on a TorchScript forward,
so Auditor calls it, on the same superpixels as LIME.
"""

from __future__ import annotations

import torch
from captum.attr import KernelShap as CaptumKernelShap

from auditor.explain.base import Batch, ExplainContext, Method, PassCount
from auditor.explain.superpixels import attribute_superpixels


class KernelShap(Method):
    key = "kernel-shap"
    title = "KernelSHAP"
    paper = "Lundberg and Lee, 2017, A Unified Approach to Interpreting Model Predictions"
    postprocessing = ("mean-over-channels", "relu")
    implementation = "Captum KernelShap on the model's forward, scikit-image SLIC superpixels"
    perturbation = True
    reading = "Each superpixel's estimated Shapley value for the class score."
    caveat = (
        "An estimate from random coalitions: with few samples per superpixel it is "
        "noisy; 'absent' means filled with the mean colour, which is itself a choice."
    )

    def settings_text(self) -> str:
        return f"{self.settings.shap_samples} coalitions, ~{self.settings.superpixels} superpixels"

    def passes_per_image(self, context: ExplainContext, size: tuple[int, int]) -> PassCount:
        return PassCount(forward=self.settings.shap_samples)

    @torch.no_grad()
    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        explainer = CaptumKernelShap(context.class_scores)
        return attribute_superpixels(
            explainer, batch, context, self.settings.superpixels, self.settings.shap_samples
        )
