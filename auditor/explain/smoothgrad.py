"""SmoothGrad (Smilkov et al., 2017).

"SmoothGrad: removing noise by adding noise" (arXiv:1706.03825): the mean of a
gradient method's raw maps over copies of the image with Gaussian noise of standard
deviation ``noise × (max - min)`` of the input, then that method's post-processing.
It wraps any gradient method of the registry (``smoothgrad-base``, default saliency).

Auditor's own loop rather than Captum's ``NoiseTunnel``: the wrapped methods are
Auditor's (the CAM family and the guided ones have no Captum twin on TorchScript), and
all noisy copies of all images of a batch share gradient passes at the measured
forward+backward batch size. Noise is drawn per image from ``seed + index``. With
saliency as the base it equals Captum's ``NoiseTunnel(Saliency(abs=False))`` given the
same noise (tested).
"""

from __future__ import annotations

import torch

from auditor.explain.base import (
    Batch,
    ExplainContext,
    ExplainSettings,
    GradientMethod,
    Method,
    PassCount,
)


class SmoothGrad(Method):
    key = "smoothgrad"
    title = "SmoothGrad"
    paper = "Smilkov et al., 2017, SmoothGrad (arXiv:1706.03825)"
    implementation = "Auditor (noisy copies share gradient passes); reference: Captum NoiseTunnel"
    perturbation = True
    reading = "The wrapped method's map averaged over noisy copies: sharper, less speckled."
    caveat = (
        "Smoothing makes maps look convincing without making them more faithful; the "
        "noise level changes the result."
    )

    def __init__(self, settings: ExplainSettings) -> None:
        super().__init__(settings)
        from auditor.explain import METHODS

        base = METHODS[settings.smoothgrad_base](settings)
        if not isinstance(base, GradientMethod):
            raise ValueError(
                f"smoothgrad-base {settings.smoothgrad_base!r} is not a gradient method"
            )
        self.base = base
        self.postprocessing = base.postprocessing
        self.uses_layer = base.uses_layer
        self.needs_head = base.needs_head

    def not_applicable(self, context: ExplainContext) -> str | None:
        return self.base.not_applicable(context)

    def settings_text(self) -> str:
        return (
            f"{self.settings.smoothgrad_samples} samples of {self.base.title}, noise "
            f"{self.settings.smoothgrad_noise:g} × value range"
        )

    def passes_per_image(self, context: ExplainContext, size: tuple[int, int]) -> PassCount:
        extra = 1 if self.base.needs_guided else 0
        return PassCount(backward=self.settings.smoothgrad_samples * (1 + extra))

    def noisy_inputs(self, batch: Batch) -> torch.Tensor:
        """``(B·n, C, H, W)``: ``n`` noisy copies of each image, image by image."""
        n = self.settings.smoothgrad_samples
        copies = []
        for image, seed in zip(batch.inputs, batch.seeds, strict=True):
            generator = torch.Generator(device="cpu").manual_seed(seed)
            sigma = self.settings.smoothgrad_noise * float(image.max() - image.min())
            noise = torch.randn((n, *image.shape), generator=generator) * sigma
            copies.append(image.unsqueeze(0) + noise.to(image.device, image.dtype))
        return torch.cat(copies)

    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        n = self.settings.smoothgrad_samples
        noisy = self.noisy_inputs(batch)
        targets = batch.targets.repeat_interleave(n)
        maps = []
        step = context.backward_batch
        for start in range(0, len(noisy), step):
            passes = context.passes(
                noisy[start : start + step],
                targets[start : start + step],
                guided=self.base.needs_guided,
                gradients=self.base.needs_gradients,
            )
            maps.append(self.base.from_passes(passes, context).detach())
        stacked = torch.cat(maps)
        return stacked.view(len(batch.inputs), n, *stacked.shape[1:]).mean(dim=1)
