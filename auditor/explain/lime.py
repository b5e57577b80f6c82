"""LIME over SLIC superpixels (Ribeiro, Singh and Guestrin, 2016).

"'Why Should I Trust You?': Explaining the Predictions of Any Classifier", KDD 2016:
random subsets of superpixels are kept (the rest set to zero in the model's input
space, the normalisation mean), and a weighted ridge regression of the target score on
which superpixels were kept gives each superpixel's weight. As in the ``lime``
package: cosine distance, exponential kernel of width 0.25, ridge with alpha 1.
Captum's ``Lime`` runs correctly on a TorchScript forward, so Auditor calls it.
"""

from __future__ import annotations

import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import Lime as CaptumLime
from captum.attr._core.lime import get_exp_kernel_similarity_function

from auditor.explain.base import Batch, ExplainContext, Method, PassCount
from auditor.explain.superpixels import attribute_superpixels


class Lime(Method):
    key = "lime"
    title = "LIME"
    paper = "Ribeiro et al., 2016, Why Should I Trust You? (arXiv:1602.04938)"
    postprocessing = ("mean-over-channels", "relu")
    implementation = "Captum Lime on the model's forward, scikit-image SLIC superpixels"
    perturbation = True
    reading = "Superpixels whose presence a local linear model finds raises the class score."
    caveat = (
        "Depends on the superpixels, the number of samples and the kernel width; a "
        "different seed can rank superpixels differently."
    )

    def settings_text(self) -> str:
        return f"{self.settings.lime_samples} samples, ~{self.settings.superpixels} superpixels"

    def passes_per_image(self, context: ExplainContext, size: tuple[int, int]) -> PassCount:
        return PassCount(forward=self.settings.lime_samples)

    @torch.no_grad()
    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        explainer = CaptumLime(
            context.class_scores,
            interpretable_model=SkLearnRidge(alpha=1.0),
            similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=0.25),
        )
        return attribute_superpixels(
            explainer, batch, context, self.settings.superpixels, self.settings.lime_samples
        )
