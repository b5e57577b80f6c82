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

import torch

from auditor.architecture import ArchitectureProfile, LayerInfo, choose_target_layer
from auditor.errors import ConfigError
from auditor.explain.base import token_grid
from auditor.explain.settings import ExplainSettings
from auditor.load import LoadedModel, OutputKind, target_scores

__all__ = ["choose_layer", "is_token_shape", "target_layer"]

_MOST_LEADING_TOKENS = 8
"""A grid with more leading tokens than this is not taken for a transformer's output."""


def is_token_shape(shape: tuple[int, ...], prefix: int | None = None) -> bool:
    """Whether a per-image ``(T, D)`` output is tokens over a square grid (≥ 2×2).

    Args:
        shape: One image's output shape.
        prefix: Leading tokens before the grid (``None``: detected, see
            :func:`~auditor.explain.base.token_grid`).
    """
    if len(shape) != 2:
        return False
    grid = token_grid(shape[0], prefix)
    return grid is not None and grid[1] >= 2 and grid[0] <= _MOST_LEADING_TOKENS


def _explainable(layer: LayerInfo, prefix: int | None) -> bool:
    """A spatial ``(C, H, W)`` output, or tokens over a square grid."""
    return len(layer.output_shape) == 3 or is_token_shape(layer.output_shape, prefix)


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
        grid = token_grid(layer.output_shape[0], prefix)
        dropped = grid[0] if grid else 0  # a token layer has a grid
        if grad is not None and bool(grad[0, dropped:].abs().sum() > 0):
            return layer
    return spatial


def target_layer(
    model: LoadedModel,
    profile: ArchitectureProfile,
    settings: ExplainSettings,
    kind: OutputKind,
    seed: int,
) -> str | None:
    """The CAM family's layer: ``settings.target_layer`` checked, or the one chosen here.

    Args:
        model: The loaded model.
        profile: Its architecture profile (its layers, and the input shape: a random
            image of that shape finds a transformer's token layer with gradient).
        settings: The explain settings (``target_layer``, ``token_prefix``).
        kind: How its output is read.
        seed: Seed of that random image (the run's).

    Returns:
        The layer's dotted path, or ``None`` if the model has no layer to explain.

    Raises:
        ConfigError: ``settings.target_layer`` names no module with a ``(C, H, W)`` or
            ``(tokens, dim)`` output; the message lists the last ones that qualify.
    """
    layers = profile.layers
    if settings.target_layer is None:
        generator = torch.Generator().manual_seed(seed)
        example = torch.rand(profile.input_shape, generator=generator)
        chosen = choose_layer(model, layers, example, kind, settings.token_prefix)
        return chosen.path if chosen else None
    named = next((layer for layer in layers if layer.path == settings.target_layer), None)
    if named is None or not _explainable(named, settings.token_prefix):
        usable = [
            layer.path
            for layer in sorted(layers, key=lambda layer: layer.order)
            if _explainable(layer, None)
        ][-5:]
        raise ConfigError(
            f"target-layer {settings.target_layer!r} is not a module with a (C, H, W) or "
            f"(tokens, dim) output in this model; choose one of the later ones: "
            f"{', '.join(usable) or 'none'}"
        )
    return named.path
