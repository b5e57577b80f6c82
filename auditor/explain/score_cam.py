"""Score-CAM (Wang et al., 2020).

"Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
CVPR workshops 2020: each channel of the target layer, upsampled and min-max scaled
to [0, 1], masks the input; the target scores of the masked inputs, softmaxed over
channels, weight the channels; the map is the ReLU of the weighted sum. As in
pytorch-grad-cam (the reference on the eager twin), the score is the raw logit and the
upsampling is bilinear with aligned corners.

Auditor's own code on the tap layer (pytorch-grad-cam needs hooks): one forward pass
per channel and image, batched across channels *and* images at the measured batch
size, building each chunk of masked inputs only when it is scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from auditor.explain.base import Batch, ExplainContext, Method, PassCount


class ScoreCam(Method):
    key = "score-cam"
    title = "Score-CAM"
    paper = "Wang et al., 2020, Score-CAM (arXiv:1910.01279)"
    uses_layer = True
    needs_passes = True
    postprocessing = ("relu", "upsample-bilinear")
    implementation = "Auditor (tapped layer, batched masked passes); reference: pytorch-grad-cam"
    perturbation = True
    reading = (
        "Channels of the target layer weighted by how much the class score stays "
        "when only the region each one highlights is shown."
    )
    caveat = (
        "Costs one forward pass per channel; masked images are far from the data the "
        "model saw, and softmax weights can be nearly uniform over many channels."
    )

    def passes_per_image(self, context: ExplainContext, size: tuple[int, int]) -> PassCount:
        return PassCount(forward=context.layer_channels)

    @torch.no_grad()
    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        if batch.passes is None:
            raise RuntimeError("score-cam needs the target layer's activations")
        activations = batch.passes.activations
        n_images, channels = activations.shape[:2]
        size = batch.inputs.shape[-2:]
        scores = torch.empty(n_images * channels, device=activations.device)
        for start in range(0, n_images * channels, context.forward_batch):
            pairs = torch.arange(
                start,
                min(start + context.forward_batch, n_images * channels),
                device=activations.device,
            )
            image, channel = pairs // channels, pairs % channels
            masks = F.interpolate(
                activations[image, channel].unsqueeze(1),
                size=size,
                mode="bilinear",
                align_corners=True,
            ).squeeze(1)
            low = masks.flatten(1).min(dim=1).values.view(-1, 1, 1)
            span = masks.flatten(1).max(dim=1).values.view(-1, 1, 1) - low
            masks = torch.where(span > 0, (masks - low) / span.clamp(min=1e-12), 0.0)
            masked = batch.inputs[image] * masks.unsqueeze(1)
            scores[start : start + len(pairs)] = (
                context.class_scores(masked).gather(1, batch.targets[image].view(-1, 1)).squeeze(1)
            )
        weights = torch.softmax(scores.view(n_images, channels), dim=1)
        return torch.einsum("bk,bkhw->bhw", weights, activations)
