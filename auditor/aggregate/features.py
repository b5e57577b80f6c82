"""The feature-visualisation section: first-layer filters, the strongest activations and
the images that maximise each class and the dissection's top units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.aggregate.figures import MAX_FILTERS, activation_tile, filter_grid, image_tile
from auditor.aggregate.inputs import AuditInputs
from auditor.concepts.maximise import Maximised
from auditor.explain.engine import Explanations

__all__ = [
    "ActivationTile",
    "FeatureRow",
    "FeaturesView",
    "MaximisedTile",
    "StageTiles",
    "feature_rows",
    "features_view",
]


@dataclass(frozen=True)
class ActivationTile:
    """One channel's activation map (viridis PNG data URI)."""

    channel: int
    image: str


@dataclass(frozen=True)
class StageTiles:
    """The strongest channels of one stage for one image."""

    stage: str
    tiles: tuple[ActivationTile, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class FeatureRow:
    """One image's strongest activation maps, stage by stage."""

    path: str
    image: str
    stages: tuple[StageTiles, ...]


@dataclass(frozen=True)
class MaximisedTile:
    """The image that maximises one objective, and the objective's value on it."""

    name: str
    image: str
    value: float


@dataclass(frozen=True)
class FeaturesView:
    """The feature-visualisation section.

    Attributes:
        filters_figure: Grid of the first convolution's filters (PNG data URI), or "".
        n_filters: Filters of the first convolution.
        n_shown: Filters in the grid (at most :data:`MAX_FILTERS`).
        grayscale: Whether the filters are shown as their channel mean, in gray.
        rows: Per explained image, the strongest activations per stage.
        maximised: Activation maximisation's result, or ``None`` when it did not run;
            ``tiles`` its images.
        noun: Whose scores it raises: "class", or a multi-label model's "label".
    """

    filters_figure: str
    n_filters: int
    n_shown: int
    grayscale: bool
    rows: tuple[FeatureRow, ...]
    maximised: Maximised | None
    tiles: tuple[MaximisedTile, ...]
    noun: str


def _stage_tiles(stage: str, channels: np.ndarray, maps: np.ndarray) -> StageTiles:
    """``channels``: ``(k,)`` channel indices; ``maps``: their ``(k, H, W)`` activations."""
    tiles = tuple(
        ActivationTile(int(channel), activation_tile(values))
        for channel, values in zip(channels, maps, strict=True)
    )
    return StageTiles(stage, tiles, tuple(tile.channel for tile in tiles))


def feature_rows(explanations: Explanations) -> tuple[FeatureRow, ...]:
    """The feature-visualisation rows of the images whose stage maps were kept."""
    paths = dict(zip(explanations.records["index"], explanations.records["path"], strict=True))
    features = explanations.features
    return tuple(
        FeatureRow(
            path=str(paths[index]),
            image=image_tile(explanations.images[index]),
            stages=tuple(
                _stage_tiles(stage.path, channels, maps)
                for stage, (channels, maps) in zip(features.stages, per_stage, strict=True)
            ),
        )
        for index, per_stage in features.maps.items()
    )


def features_view(inputs: AuditInputs) -> FeaturesView | None:
    """The filters and activations, or ``None`` when the model has neither to show."""
    filters = inputs.explanations.filters
    rows = feature_rows(inputs.explanations)
    maximised = inputs.concepts.maximised
    if filters is None and not rows and maximised is None:
        return None
    tiles = () if maximised is None else tuple(
        MaximisedTile(o.name, image_tile(image.transpose(1, 2, 0)), float(value))
        for o, image, value in zip(
            maximised.objectives, maximised.images, maximised.values, strict=True
        )
    )  # fmt: skip
    return FeaturesView(
        filters_figure="" if filters is None else filter_grid(filters),
        n_filters=0 if filters is None else len(filters),
        n_shown=0 if filters is None else min(len(filters), MAX_FILTERS),
        grayscale=inputs.preprocessing.channels != 3,
        rows=rows,
        maximised=maximised,
        tiles=tiles,
        noun="label" if inputs.evaluation.output_kind.multi_label else "class",
    )
