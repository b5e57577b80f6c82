"""Feature visualisation: the first convolution's filters and per-stage activation maps.

Two views from the chapter this project grew from ("visualising what a CNN learned"):

* the first convolution's filters as small images (each scaled to [0, 1] on its own,
  as in Krizhevsky et al., 2012, figure 3): edge, colour and texture detectors in a
  healthy model, noise in an untrained or broken one;
* for explained images, the strongest channels (highest mean activation) of the last
  module at each spatial resolution ("stage"), from one tapped forward pass.

Auditor's own code on the tap layer (no library reads TorchScript activations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from auditor.architecture import LayerInfo
from auditor.load import LoadedModel

__all__ = [
    "FEATURE_IMAGES",
    "FeatureMaps",
    "Stage",
    "first_filters",
    "stage_layers",
    "stage_maps",
]

MAX_STAGES = 5
TOP_CHANNELS = 4
FEATURE_IMAGES = 4
"""Explained images whose strongest activation maps the report shows (one forward each)."""


@dataclass(frozen=True)
class Stage:
    """The last module at one spatial resolution: its path and ``(C, H, W)`` output shape."""

    path: str
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class FeatureMaps:
    """Activation maps of the strongest channels, per image and stage.

    Attributes:
        stages: The stages, from input to output.
        maps: Sample index → per stage, ``(channels, maps)``: channel indices ``(k,)``
            and their ``(k, H, W)`` float32 activation maps.
    """

    stages: tuple[Stage, ...]
    maps: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(repr=False)


def first_filters(model: LoadedModel) -> np.ndarray | None:
    """``(N, k, k, C)`` first-convolution filters, each scaled to [0, 1]; ``None`` if no conv.

    Filters with 3 input channels are shown as RGB; otherwise as their channel mean.
    """
    first = model.tapped.first_convolution()
    if first is None or first[0].dim() != 4:
        return None
    weight = first[0].float().cpu()
    if first[1]:  # transposed: (in, out, k, k)
        weight = weight.transpose(0, 1)
    if weight.shape[1] != 3:
        weight = weight.mean(dim=1, keepdim=True)
    flat = weight.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1, 1) - low).clamp(min=1e-12)
    return ((weight - low) / span).permute(0, 2, 3, 1).numpy()


def stage_layers(layers: tuple[LayerInfo, ...]) -> tuple[Stage, ...]:
    """The last (outermost) module at each spatial resolution above 1×1 (:data:`MAX_STAGES`)."""
    spatial = sorted(
        (
            layer
            for layer in layers
            if len(layer.output_shape) == 3
            and layer.order > 0
            and layer.output_shape[1] * layer.output_shape[2] > 1
        ),
        key=lambda layer: (layer.order, -layer.path.count(".")),
    )
    stages: list[Stage] = []
    for layer in spatial:
        shape = (layer.output_shape[0], layer.output_shape[1], layer.output_shape[2])
        if stages and stages[-1].shape[1:] == shape[1:]:
            stages[-1] = Stage(layer.path, shape)
        else:
            stages.append(Stage(layer.path, shape))
    return tuple(stages[-MAX_STAGES:])


@torch.no_grad()
def stage_maps(
    model: LoadedModel, stages: tuple[Stage, ...], inputs: dict[int, torch.Tensor]
) -> FeatureMaps:
    """The :data:`TOP_CHANNELS` strongest channels of each stage for each input.

    Args:
        model: The loaded model.
        stages: From :func:`stage_layers`.
        inputs: Sample index → ``(C, H, W)`` normalised input.
    """
    maps: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    if not stages or not inputs:
        return FeatureMaps(stages, maps)
    indices = list(inputs)
    batch = torch.stack([inputs[i] for i in indices]).to(model.device)
    _, taps = model.tapped(batch, [stage.path for stage in stages])
    for row, index in enumerate(indices):
        per_stage = []
        for tap in taps:
            activation = tap[row].float()
            k = min(TOP_CHANNELS, activation.shape[0])
            channels = activation.mean(dim=(1, 2)).topk(k).indices
            per_stage.append((channels.cpu().numpy(), activation[channels].cpu().numpy()))
        maps[index] = per_stage
    return FeatureMaps(stages, maps)
