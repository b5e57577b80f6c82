"""Choose the target layer of the CAM family, for convolutional networks and transformers.

A CNN's layer is the last module with a spatial ``(C, H, W)`` output
(:func:`auditor.architecture.choose_target_layer`). A vision transformer's blocks
output ``(T, D)`` tokens, a class token and a square grid of patch tokens, and after
the last block only the class token reaches the head: the gradient on the patch
tokens of the last block's output is zero, so Grad-CAM there is blank. Auditor takes
the last token layer whose patch tokens do receive gradient (in torchvision's ViT
the last block's first LayerNorm, ``encoder.layers.encoder_layer_11.ln_1``), found by
one gradient pass over all candidates on an example image.
"""

from __future__ import annotations

import math

import torch

from auditor.architecture import LayerInfo, choose_target_layer
from auditor.load import LoadedModel, OutputKind, target_scores

__all__ = ["choose_layer", "is_token_shape"]


def is_token_shape(shape: tuple[int, ...], prefix: int | None = None) -> bool:
    """Whether a per-image ``(T, D)`` output is tokens over a square grid (≥ 2×2)."""
    if len(shape) != 2:
        return False
    tokens = shape[0]
    drop = tokens - math.isqrt(tokens) ** 2 if prefix is None else prefix
    side = math.isqrt(max(tokens - drop, 0))
    return side >= 2 and side * side == tokens - drop and drop <= 8


def choose_layer(
    model: LoadedModel,
    layers: tuple[LayerInfo, ...],
    example: torch.Tensor,
    kind: OutputKind,
    prefix: int | None = None,
) -> LayerInfo | None:
    """The target layer: the last spatial one, or a transformer's last token layer with gradient.

    Args:
        model: The loaded model.
        layers: Its module table (from :func:`auditor.architecture.profile_model`).
        example: One ``(C, H, W)`` model input, used only when the model has token layers.
        kind: How its output is read.
        prefix: Leading tokens before the grid (``None``: detected).
    """
    spatial = choose_target_layer(layers)
    after = spatial.order if spatial else -1
    tokens = sorted(
        (
            layer
            for layer in layers
            if layer.order > after and is_token_shape(layer.output_shape, prefix)
        ),
        key=lambda layer: (layer.order, -layer.path.count(".")),
    )
    if not tokens:
        return spatial
    x = example.unsqueeze(0).to(model.device).requires_grad_(True)
    with torch.enable_grad():
        output, taps = model.tapped(x, [layer.path for layer in tokens])
        score = target_scores(output, kind, torch.zeros(1, dtype=torch.long, device=x.device))
        grads = torch.autograd.grad(score.sum(), taps, allow_unused=True)
    for layer, grad in reversed(list(zip(tokens, grads, strict=True))):
        shape = layer.output_shape
        drop = shape[0] - math.isqrt(shape[0]) ** 2 if prefix is None else prefix
        if grad is not None and bool(grad[0, drop:].abs().sum() > 0):
            return layer
    return spatial
