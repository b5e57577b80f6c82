"""Network dissection's settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditor.settings import inherited, setting

__all__ = ["COMPUTED_CONCEPTS", "ConceptSettings"]

COMPUTED_CONCEPTS = {
    "dark": "grey value below 0.2",
    "bright": "grey value above 0.8",
    "border": "the outer eighth of the image on each side",
}
"""Concepts computed from the image itself, and what each covers."""


def _computed(names: tuple[str, ...]) -> str | None:
    unknown = [n for n in names if n not in COMPUTED_CONCEPTS]
    return f"knows {', '.join(COMPUTED_CONCEPTS)}, got {unknown}" if unknown else None


def _concept_dir(path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.is_dir():
        return "is not a folder; give a folder with one sub-folder of images per concept"
    if not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return "has no sub-folder; put each concept's images in a sub-folder named after it"
    return None


def _runs(value: int) -> str | None:
    return None if value == 0 or value >= 2 else f"must be 0 (no TCAV) or at least 2, got {value}"


def _quantile(value: float) -> str | None:
    return None if 0 < value <= 0.5 else f"must be in (0, 0.5], got {value:g}"


@dataclass(frozen=True)
class ConceptSettings:
    """Which concepts the units are compared with, on which layers, and what labels a unit.

    Set in the config file (flat or in its ``[concepts]`` table). ``batch_size``,
    ``workers`` and ``seed`` are the run's.
    """

    concepts: tuple[str, ...] = setting(
        (),
        help="Manifest columns of binary mask paths (relative to the manifest, like mask), "
        "each a concept for network dissection; an empty cell means the concept is absent "
        "from that image. The column mask (the region of interest) may be one",
        items="columns",
    )
    artifact_concepts: tuple[str, ...] = setting(
        (),
        help="Concepts that are artefacts (a marker, a ruler, text): units detecting one are "
        "a finding",
        items="concepts",
    )
    computed_concepts: tuple[str, ...] = setting(
        tuple(COMPUTED_CONCEPTS),
        help="Concepts computed from the image itself: dark (grey value below 0.2), bright "
        "(above 0.8), border (the outer eighth of each side)",
        check=_computed,
        items="concepts",
    )
    dissection_images: int = setting(
        2000,
        help="Evaluated images dissected (a seeded sample when there are more); 0 skips "
        "network dissection",
        unit="images",
        minimum=0,
        flag=True,
    )
    dissection_quantile: float = setting(
        0.005,
        help="Top share of a unit's upsampled activations over the data set that makes its "
        "mask (Bau et al., 2017)",
        unit="share",
        check=_quantile,
    )
    dissection_iou: float = setting(
        0.04,
        help="IoU with its best concept at or above which a unit is labelled with it",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    concept_dir: Path | None = setting(
        None,
        help="TCAV: a folder with one sub-folder of images per concept, named as the concept "
        "(whole images, tested against whole validation images)",
        check=_concept_dir,
        flag=True,
        default_text="none",
    )
    tcav_runs: int = setting(
        10,
        help="TCAV: CAVs per concept, each against another set of random validation images",
        minimum=0,
        check=_runs,
        maximum=100,
        default_text="10 (0 skips TCAV)",
    )
    tcav_images: int = setting(
        50,
        help="TCAV: images per concept set, random set and class (label)",
        unit="images",
        minimum=5,
    )
    tcav_pseudo: int = setting(
        39,
        help="TCAV: random pseudo-concepts scored as a concept is (the null); the smallest "
        "p-value is 1 / (tcav-pseudo + 1)",
        minimum=1,
    )
    tcav_alpha: float = setting(
        0.05,
        help="TCAV: p-value below which a concept moves a class's (label's) score",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    maximise_steps: int | None = setting(
        None,
        help="Activation maximisation: Adam steps per image (one forward and one backward pass "
        "of the batch each); 0 skips it",
        minimum=0,
        flag=True,
        default_text="256 on a CPU, 1024 on a GPU",
    )
    maximise_size: int | None = setting(
        None,
        help="Activation maximisation: side of the optimised image, resized to the model's "
        "input after the transforms",
        unit="pixels",
        minimum=8,
        maximum=1024,
        default_text="the model's input side",
    )
    maximise_lr: float = setting(
        0.05,
        help="Activation maximisation: Adam's learning rate (Lucent's)",
        minimum=0.0,
        maximum=10.0,
        open_minimum=True,
    )
    maximise_classes: int = setting(
        10,
        help="Activation maximisation: classes (a multi-label model's labels) whose score is "
        "maximised (the first ones)",
        minimum=0,
    )
    batch_size: int = inherited("batch_size", 32)
    workers: int = inherited("workers", 0)
    seed: int = inherited("seed", 0)
