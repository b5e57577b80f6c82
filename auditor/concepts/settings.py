"""Network dissection's settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

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
    batch_size: int = inherited("batch_size", 32)
    workers: int = inherited("workers", 0)
    seed: int = inherited("seed", 0)
