"""The main body's gallery: the maps of the methods that can be read, for a few cases.

Only methods whose trust verdict is *good* (they pass randomisation and beat a random
order; an unstable one is named as such) are shown here; every method's maps of every
explained case are in the appendix (:mod:`.cases`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from auditor.aggregate.cases import CaseHead, scaled
from auditor.aggregate.figures import colorbar_figure, image_tile, overlay_tile
from auditor.aggregate.inputs import AuditInputs
from auditor.measure.verdicts import VerdictLevel

__all__ = ["GALLERY_ERRORS", "GALLERY_SAMPLES", "GalleryRow", "GalleryView", "gallery_view"]

GALLERY_ERRORS = 3
"""Most confident errors shown (of those explained)."""

GALLERY_SAMPLES = 2
"""Sampled cases shown (of those explained)."""


@dataclass(frozen=True)
class GalleryRow(CaseHead):
    """One case: the image, then each readable method's map for the predicted class.

    Attributes:
        tiles: ``(method title, PNG data URI)``, one per method of
            :attr:`GalleryView.methods` (the URI "" when it gave no map for this case).
    """

    tiles: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class GalleryView:
    """The gallery: ``rows`` of cases by ``methods`` (titles), errors first."""

    methods: tuple[str, ...]
    rows: tuple[GalleryRow, ...]
    n_errors_shown: int
    n_sampled_shown: int
    n_explained: int
    unstable: tuple[str, ...]
    colorbar: str


def _one_per_class(indices: list[int], inputs: AuditInputs, limit: int) -> tuple[int, ...]:
    """Up to ``limit`` of ``indices``, each true class in turn (the sample is grouped by
    class, so its first ones would all be of one class)."""
    labels = inputs.evaluation.predictions.set_index("index")["label"]
    by_class: dict[str, list[int]] = {}
    for index in indices:
        by_class.setdefault(str(labels.at[index]), []).append(index)
    turns = [i for turn in itertools.zip_longest(*by_class.values()) for i in turn]
    return tuple(i for i in turns if i is not None)[:limit]


def gallery_view(inputs: AuditInputs) -> GalleryView | None:
    """The readable methods' maps of the most confident errors and a few sampled cases;
    ``None`` when no method can be read or no image was explained."""
    explanations = inputs.explanations
    verdicts = inputs.trust.verdicts
    readable = set(verdicts.loc[verdicts["level"] == VerdictLevel.GOOD.value, "method"])
    methods = {d.key: d.title for d in explanations.methods if d.key in readable}
    shaky = set(verdicts.loc[verdicts["stability"] == "unstable", "method"])
    errors = inputs.selection.misclassified[:GALLERY_ERRORS]
    indices = errors + _one_per_class(
        [i for i in inputs.selection.sampled if i not in errors], inputs, GALLERY_SAMPLES
    )
    shown = [i for i in indices if explanations.case(i, "predicted") is not None]
    if not methods or not shown:
        return None
    predictions = inputs.evaluation.predictions
    rows = predictions.set_index("index")
    confidences = dict(zip(predictions["index"], predictions["confidence"], strict=True))
    gallery = []
    for index in shown:
        case = explanations.case(index, "predicted")
        assert case is not None
        found = explanations.maps.of(case, methods)
        image = explanations.images[index]
        gallery.append(
            GalleryRow(
                path=str(rows.at[index, "path"]),
                label=str(rows.at[index, "label"]),
                prediction=str(rows.at[index, "prediction"]),
                confidence=float(confidences[index]),
                wrong=not bool(rows.at[index, "correct"]),
                image=image_tile(image),
                tiles=tuple(
                    (title, overlay_tile(image, scaled(found[key])) if key in found else "")
                    for key, title in methods.items()
                ),
            )
        )
    return GalleryView(
        methods=tuple(methods.values()),
        rows=tuple(gallery),
        n_errors_shown=sum(1 for i in shown if i in errors),
        n_sampled_shown=sum(1 for i in shown if i not in errors),
        n_explained=len(set(inputs.selection.misclassified) | set(inputs.selection.sampled)),
        unstable=tuple(title for key, title in methods.items() if key in shaky),
        colorbar=colorbar_figure(),
    )
