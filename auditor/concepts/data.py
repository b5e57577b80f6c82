"""Concept data without Broden: mask columns of the manifest declared as concepts,
concepts computed from the image itself, and folders of concept images (for TCAV).

A declared column holds, per image, the path of a binary mask (relative to the
manifest, like ``mask``); an empty cell means the concept is absent from that image (an
all-zero mask). The declared columns are taken out of the metadata, so they are not
broken down as subgroups. The computed concepts are named as such in the report. A
``concept-dir`` holds one sub-folder of images per concept, named as the sub-folder;
those concepts have no masks, so only TCAV tests them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from auditor.concepts.settings import COMPUTED_CONCEPTS, ConceptSettings
from auditor.data import IMAGE_EXTENSIONS, Dataset, resolve_inside
from auditor.errors import ConfigError

__all__ = ["ConceptData", "computed_masks", "split_concepts"]

DARK, BRIGHT = 0.2, 0.8
"""Grey values below (above) which a pixel is in the computed concept ``dark`` (``bright``)."""


@dataclass(frozen=True)
class ConceptData:
    """The concepts a dissection compares units with, and the ones TCAV tests.

    Attributes:
        declared: Manifest columns declared as concepts, in declaration order.
        computed: Concepts computed from the image (:data:`COMPUTED_CONCEPTS`).
        artifacts: The declared, computed or folder concepts that are artefacts.
        paths: Sample index → one mask path per declared concept (``None``: absent).
        folders: Concept name → its images, from ``concept-dir`` (TCAV only).
    """

    declared: tuple[str, ...]
    computed: tuple[str, ...]
    artifacts: tuple[str, ...]
    paths: dict[int, tuple[Path | None, ...]]
    folders: dict[str, tuple[Path, ...]] = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The concepts with masks (dissection's): the declared ones, then the computed."""
        return self.declared + self.computed

    @property
    def tested(self) -> tuple[str, ...]:
        """TCAV's concepts: the declared ones, the computed artefacts, then the folders (the
        other computed concepts are for dissection only: each concept tested costs a null
        of its own)."""
        artefacts = tuple(c for c in self.computed if c in self.artifacts)
        return self.declared + artefacts + tuple(self.folders)


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
        ConfigError: A declared concept is no column of the manifest, a concept folder is
            named as another concept, or an artefact concept is no concept.
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
    smallest = 1 / (settings.tcav_pseudo + 1)
    if settings.tcav_runs and smallest >= settings.tcav_alpha:
        raise ConfigError(
            f"tcav-pseudo {settings.tcav_pseudo} cannot give a p-value below tcav-alpha "
            f"{settings.tcav_alpha:g} (the smallest is 1/{settings.tcav_pseudo + 1}); raise "
            f"tcav-pseudo to at least {int(1 / settings.tcav_alpha)}"
        )
    folders = concept_folders(settings.concept_dir)
    clash = [name for name in folders if name in declared + settings.computed_concepts]
    if clash:
        raise ConfigError(
            f"concept-dir {str(settings.concept_dir)!r} has folders {clash} named as declared "
            "or computed concepts; rename the folders"
        )
    every = declared + settings.computed_concepts + tuple(folders)
    unknown = [a for a in settings.artifact_concepts if a not in every]
    if unknown:
        raise ConfigError(
            f"artifact-concepts {unknown} are not concepts; name some of {list(declared)}, "
            f"of the computed {list(settings.computed_concepts)} or of the concept-dir "
            f"folders {list(folders)}"
        )
    columns = [_column_paths(dataset, c) for c in declared]
    paths = {s.index: tuple(c[s.index] for c in columns) for s in dataset.samples}
    kept = tuple(c for c in dataset.metadata_columns if c not in declared)
    samples = tuple(
        dataclasses.replace(s, metadata=tuple((k, v) for k, v in s.metadata if k in kept))
        for s in dataset.samples
    )
    stripped = dataclasses.replace(dataset, samples=samples, metadata_columns=kept)
    data = ConceptData(
        declared, settings.computed_concepts, settings.artifact_concepts, paths, folders
    )
    return stripped, data


def concept_folders(root: Path | None) -> dict[str, tuple[Path, ...]]:
    """Each sub-folder of ``root`` (not hidden), by name: its image files at any depth,
    sorted. Files that are no image by their suffix are not concept images."""
    if root is None:
        return {}
    return {
        folder.name: tuple(
            sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and p.is_file() and not p.name.startswith("."))
        )
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }  # fmt: skip


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
