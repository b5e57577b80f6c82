"""The network-dissection section: which units detect which concept, and artefact units
as findings (see :mod:`auditor.concepts`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.aggregate.figures import figure_uri, styled_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.concepts.files import artifact_units
from auditor.concepts.settings import COMPUTED_CONCEPTS
from auditor.concepts.stage import NetworkDissection, UnitExample

__all__ = ["DissectionView", "dissection_findings", "dissection_view"]


@dataclass(frozen=True)
class ConceptRow:
    """A concept: where it comes from, and on how many images it was annotated and present."""

    name: str
    source: str
    annotated: int
    present: int
    artifact: bool


@dataclass(frozen=True)
class LayerRow:
    """A layer: its units and how many of them each concept labels."""

    path: str
    shape: tuple[int, int, int]
    counts: tuple[int, ...]
    unlabelled: int
    exact: bool


@dataclass(frozen=True)
class BestUnit:
    """The unit of highest IoU with a concept, over every layer."""

    concept: str
    layer: str
    unit: int
    iou: float
    labelled: bool


@dataclass(frozen=True)
class DissectionView:
    """The section.

    Attributes:
        findings: Each layer's units labelled with an artefact concept, in words.
        figure: The shown units on their top images (PNG URI; "" when none is shown).
    """

    concepts: tuple[ConceptRow, ...]
    layers: tuple[LayerRow, ...]
    best: tuple[BestUnit, ...]
    findings: tuple[str, ...]
    figure: str
    images: int
    unreadable: int
    quantile: float
    iou_threshold: float
    seconds: float
    forward_seconds: float


def dissection_findings(result: NetworkDissection | None) -> tuple[str, ...]:
    """Each layer whose units detect an artefact concept, with the count and the best IoU."""
    if result is None:
        return ()
    sentences = []
    for layer in result.layers:
        found = artifact_units(result, layer)
        for concept in dict.fromkeys(c for _, c, _ in found):
            mine = [(unit, iou) for unit, c, iou in found if c == concept]
            unit, iou = mine[0]
            sentences.append(
                f"{len(mine)} of {len(layer.labels)} units of {layer.path} detect the artefact "
                f"concept {concept} (best: unit {unit}, IoU {iou:.3f} over "
                f"{len(result.indices):,} images)."
            )
    return tuple(sentences)


def _best(result: NetworkDissection) -> tuple[BestUnit, ...]:
    rows = []
    for k, concept in enumerate(result.concepts):
        layer, unit = max(
            ((layer, int(layer.dissection.iou[:, k].argmax())) for layer in result.layers),
            key=lambda pair: pair[0].dissection.iou[pair[1], k],
        )
        iou = float(layer.dissection.iou[unit, k])
        rows.append(BestUnit(concept, layer.path, unit, iou, bool(layer.labels[unit] == k)))
    return tuple(rows)


def _figure(examples: tuple[UnitExample, ...], concepts: tuple[str, ...]) -> str:
    """One row per shown unit: its top images, its mask (orange) and the concept (cyan)."""
    if not examples:
        return ""
    columns = max(len(e.indices) for e in examples)
    with styled_figure(1.5 * columns + 1.2, 1.5 * len(examples)) as figure:
        grid = figure.subplots(len(examples), columns, squeeze=False)
        for row, example in zip(grid, examples, strict=True):
            for axes, image, fires, concept in zip(
                row, example.images, example.unit_masks, example.concept_masks, strict=False
            ):
                axes.imshow(np.clip(image.squeeze(), 0, 1), cmap="gray")
                axes.imshow(np.ma.masked_where(~fires, fires), cmap="autumn", alpha=0.55)
                if concept.any():
                    axes.contour(concept, levels=[0.5], colors="cyan", linewidths=0.8)
            for axes in row:
                axes.set_xticks([])
                axes.set_yticks([])
            row[0].set_ylabel(
                f"{example.layer}\nunit {example.unit}\n{concepts[example.concept]}\n"
                f"IoU {example.iou:.3f}",
                fontsize=6,
            )
        return figure_uri(figure)


def dissection_view(inputs: AuditInputs) -> DissectionView | None:
    """The section, or ``None`` when network dissection did not run."""
    result = inputs.concepts.dissection
    if result is None:
        return None
    data = result.data
    concepts = tuple(
        ConceptRow(
            name,
            "manifest column" if name in data.declared else f"computed: {COMPUTED_CONCEPTS[name]}",
            int(result.annotated[k]),
            int(result.present[k]),
            name in data.artifacts,
        )
        for k, name in enumerate(result.concepts)
    )
    layers = tuple(
        LayerRow(
            layer.path,
            layer.shape,
            tuple(int((layer.labels == k).sum()) for k in range(len(result.concepts))),
            int((layer.labels < 0).sum()),
            bool(layer.dissection.thresholds.exact.all()),
        )
        for layer in result.layers
    )
    return DissectionView(
        concepts=concepts,
        layers=layers,
        best=_best(result),
        findings=dissection_findings(result),
        figure=_figure(result.examples, result.concepts),
        images=len(result.indices),
        unreadable=result.unreadable,
        quantile=result.settings.dissection_quantile,
        iou_threshold=result.settings.dissection_iou,
        seconds=result.seconds,
        forward_seconds=result.forward_seconds,
    )
