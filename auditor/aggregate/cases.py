"""The case sections: every explained image with each method's map over it.

Aggregation only: it reads :class:`auditor.explain.engine.Explanations` records and
draws the overlay tiles; the templates lay them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from auditor.aggregate.figures import colorbar_figure, image_tile, overlay_tile
from auditor.aggregate.inputs import AuditInputs
from auditor.explain.engine import Explanations
from auditor.explain.postprocess import minmax

__all__ = [
    "CaseHead",
    "CaseView",
    "MisclassifiedView",
    "Panel",
    "PanelGroup",
    "SampledView",
    "case_views",
    "misclassified_view",
    "sampled_view",
    "scaled",
]

TILES_PER_ROW = 7
"""Tiles per row of a case's panel table (the image, then one per method)."""

_ROLE_WORDS = {"predicted": "the predicted class", "true": "the true class"}


@dataclass(frozen=True)
class Panel:
    """One tile of a case: a method's map over the image (or the image), as a PNG data URI."""

    method: str
    image: str


@dataclass(frozen=True)
class PanelGroup:
    """Every method's map of one case for one target class.

    Attributes:
        target: The explained class.
        role: ``predicted`` or ``true``.
        role_words: The role in words, e.g. "the true class".
        panels: One per method, in report order.
        rows: The image's tile, then ``panels``, in rows of :data:`TILES_PER_ROW`.
    """

    target: str
    role: str
    role_words: str
    panels: tuple[Panel, ...]
    rows: tuple[tuple[Panel, ...], ...]

    @property
    def is_true_class(self) -> bool:
        """Whether the maps explain the true class (of a misclassified image)."""
        return self.role == "true"


@dataclass(frozen=True)
class CaseHead:
    """An explained image as a case's heading shows it: file, label, call and its tile."""

    path: str
    label: str
    prediction: str
    confidence: float
    wrong: bool
    image: str


@dataclass(frozen=True)
class CaseView(CaseHead):
    """One explained image: its tile, its maps per target class and what went wrong."""

    index: int
    groups: tuple[PanelGroup, ...]
    note: str


@dataclass(frozen=True)
class MisclassifiedView:
    """The misclassified-cases section: the most confident errors, explained."""

    n_errors: int
    cases: tuple[CaseView, ...]
    colorbar: str


@dataclass(frozen=True)
class SampledView:
    """The sampled-cases section: a seeded sample stratified by true class, explained."""

    seed: int
    cases: tuple[CaseView, ...]
    colorbar: str


def _rows(image: str, panels: list[Panel]) -> tuple[tuple[Panel, ...], ...]:
    tiles = [Panel("image", image), *panels]
    return tuple(
        tuple(tiles[start : start + TILES_PER_ROW]) for start in range(0, len(tiles), TILES_PER_ROW)
    )


def _groups(
    index: int, targets: dict[str, str], image: str, explanations: Explanations
) -> tuple[PanelGroup, ...]:
    """Per explained role (``targets``: role → class name), every method's map of the image."""
    titles = {d.key: d.title for d in explanations.methods}
    groups = []
    for role, target in targets.items():
        case = explanations.case(index, role)
        found = explanations.maps.of(case, titles) if case is not None else {}
        panels = [
            Panel(titles[key], overlay_tile(explanations.images[index], scaled(values)))
            for key, values in found.items()
        ]
        if panels:
            groups.append(
                PanelGroup(target, role, _ROLE_WORDS[role], tuple(panels), _rows(image, panels))
            )
    return tuple(groups)


def scaled(values: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` map min-max scaled to [0, 1] for display."""
    return minmax(torch.from_numpy(values)[None])[0].numpy()


def _note(index: int, explanations: Explanations) -> str:
    records = explanations.records
    mine = records[records["index"] == index]
    failed = mine[mine["status"] != "ok"]
    n_methods = len(explanations.methods)
    problems = [
        f"{'all methods' if len(keys) == n_methods else ', '.join(keys)}: {detail}"
        for detail, keys in failed.groupby("detail")["method"].agg(list).items()
    ]
    return f"explanation failed ({'; '.join(problems)})" if problems else ""


def case_views(
    indices: tuple[int, ...], explanations: Explanations, predictions: pd.DataFrame
) -> tuple[CaseView, ...]:
    """One view per explained image: its tile and, per target class, every method's map."""
    rows = predictions.set_index("index")
    confidences = dict(
        zip(predictions["index"].tolist(), predictions["confidence"].tolist(), strict=True)
    )
    views = []
    for index in indices:
        label, prediction = str(rows.at[index, "label"]), str(rows.at[index, "prediction"])
        targets = {"predicted": prediction}
        if not bool(rows.at[index, "correct"]):
            targets["true"] = label
        image = image_tile(explanations.images[index]) if index in explanations.images else ""
        views.append(
            CaseView(
                index=index,
                path=str(rows.at[index, "path"]),
                label=label,
                prediction=prediction,
                confidence=confidences[index],
                wrong=label != prediction,
                image=image,
                groups=_groups(index, targets, image, explanations),
                note=_note(index, explanations),
            )
        )
    return tuple(views)


def misclassified_view(inputs: AuditInputs) -> MisclassifiedView:
    """The most confident errors that were explained, out of every error."""
    selection = inputs.selection
    return MisclassifiedView(
        n_errors=selection.n_errors,
        cases=case_views(
            selection.misclassified, inputs.explanations, inputs.evaluation.predictions
        ),
        colorbar=colorbar_figure(),
    )


def sampled_view(inputs: AuditInputs) -> SampledView:
    """The stratified random sample, explained."""
    return SampledView(
        seed=inputs.config.seed,
        cases=case_views(
            inputs.selection.sampled, inputs.explanations, inputs.evaluation.predictions
        ),
        colorbar=colorbar_figure(),
    )
