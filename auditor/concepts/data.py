"""Concept data without Broden: mask columns of the manifest declared as concepts, and
concepts computed from the image itself.

A declared column holds, per image, the path of a binary mask (relative to the
manifest, like ``mask``); an empty cell means the concept is absent from that image (an
all-zero mask). The declared columns are taken out of the metadata, so they are not
broken down as subgroups. The computed concepts are named as such in the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from auditor.concepts.settings import COMPUTED_CONCEPTS, ConceptSettings
from auditor.data import Dataset, resolve_inside
from auditor.errors import ConfigError

__all__ = ["ConceptData", "computed_masks", "split_concepts"]

DARK, BRIGHT = 0.2, 0.8
"""Grey values below (above) which a pixel is in the computed concept ``dark`` (``bright``)."""


@dataclass(frozen=True)
class ConceptData:
    """The concepts a dissection compares units with.

    Attributes:
        declared: Manifest columns declared as concepts, in declaration order.
        computed: Concepts computed from the image (:data:`COMPUTED_CONCEPTS`).
        artifacts: The declared or computed concepts that are artefacts.
        paths: Sample index → one mask path per declared concept (``None``: absent).
    """

    declared: tuple[str, ...]
    computed: tuple[str, ...]
    artifacts: tuple[str, ...]
    paths: dict[int, tuple[Path | None, ...]]

    @property
    def names(self) -> tuple[str, ...]:
        """Every concept: the declared ones, then the computed ones."""
        return self.declared + self.computed


def _column_paths(dataset: Dataset, column: str) -> dict[int, Path | None]:
    if column == "mask":
        return {s.index: s.mask for s in dataset.samples}
    paths: dict[int, Path | None] = {}
    for sample in dataset.samples:
        value = dict(sample.metadata).get(column, "")
        paths[sample.index] = (
            resolve_inside(dataset.root, value, dataset.source, sample.index + 2, column)
            if value
            else None
        )
    return paths


def split_concepts(dataset: Dataset, settings: ConceptSettings) -> tuple[Dataset, ConceptData]:
    """The data set without its concept columns, and the concepts' masks.

    Raises:
        ConfigError: A declared concept is no column of the manifest, or an artefact
            concept is no concept.
    """
    declared = settings.concepts
    missing = [c for c in declared if c != "mask" and c not in dataset.metadata_columns]
    if missing:
        have = (
            ", ".join(("mask", *dataset.metadata_columns)) if dataset.layout == "manifest" else ""
        )
        raise ConfigError(
            f"concepts {missing} are not columns of {str(dataset.source)!r}"
            + (f" (its columns: {have})" if have else " (a folder of images has none)")
            + "; add each as a column of mask paths, or leave it out of concepts"
        )
    unknown = [
        a for a in settings.artifact_concepts if a not in declared + settings.computed_concepts
    ]
    if unknown:
        raise ConfigError(
            f"artifact-concepts {unknown} are not concepts; name some of {list(declared)} or "
            f"of the computed {list(settings.computed_concepts)}"
        )
    columns = [_column_paths(dataset, c) for c in declared]
    paths = {s.index: tuple(c[s.index] for c in columns) for s in dataset.samples}
    kept = tuple(c for c in dataset.metadata_columns if c not in declared)
    samples = tuple(
        dataclasses.replace(s, metadata=tuple((k, v) for k, v in s.metadata if k in kept))
        for s in dataset.samples
    )
    stripped = dataclasses.replace(dataset, samples=samples, metadata_columns=kept)
    data = ConceptData(declared, settings.computed_concepts, settings.artifact_concepts, paths)
    return stripped, data


def computed_masks(images: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """``(B, len(names), H, W)`` bool: each computed concept of ``images`` (``(B, C, H, W)``
    in [0, 1], before normalisation)."""
    grey = images.mean(dim=1)
    height, width = grey.shape[-2:]
    band_y, band_x = max(1, height // 8), max(1, width // 8)
    border = torch.ones(height, width, dtype=torch.bool)
    border[band_y : height - band_y, band_x : width - band_x] = False
    masks = {
        "dark": grey < DARK,
        "bright": grey > BRIGHT,
        "border": border.expand_as(grey),
    }
    assert set(masks) == set(COMPUTED_CONCEPTS)
    return torch.stack([masks[name] for name in names], dim=1)
