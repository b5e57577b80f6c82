"""The case sections: every explained image with each method's map over it.

Aggregation only: it reads :class:`auditor.explain.engine.Explanations` records and
draws the overlay tiles; the templates lay them out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

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

_ROLE_WORDS = {
    "predicted": "the predicted class",
    "true": "the true class",
    "predicted:": "called positive",
    "missed:": "a label it has, missed",
}
"""A case's role in words (a multi-label case's role is ``predicted:`` or ``missed:``
followed by its label)."""


def role_words(role: str) -> str:
    """The role of a case in words, e.g. "the true class"."""
    return _ROLE_WORDS[role.split(":")[0] + ":" if ":" in role else role]


@dataclass(frozen=True)
class Panel:
    """One tile of a case: a method's map over the image (or the image), as a PNG data URI."""

    method: str
    image: str


@dataclass(frozen=True)
class PanelGroup:
    """Every method's map of one case for one target class.

    Attributes:
        target: The explained class (a multi-label model's: label).
        role: ``predicted`` or ``true`` (a multi-label model's: ``predicted:<label>`` or
            ``missed:<label>``).
        role_words: The role in words, e.g. "the true class".
        probability: A multi-label model's probability of the label (``None`` for a
            single-label model: its heading gives the confidence).
        panels: One per method, in report order.
        rows: The image's tile, then ``panels``, in rows of :data:`TILES_PER_ROW`.
    """

    target: str
    role: str
    role_words: str
    panels: tuple[Panel, ...]
    rows: tuple[tuple[Panel, ...], ...]
    probability: float | None = None

    @property
    def is_true_class(self) -> bool:
        """Whether the maps explain the true class (of a misclassified image), or a label
        the image has that was missed."""
        return self.role == "true" or self.role.startswith("missed:")


@dataclass(frozen=True)
class CaseHead:
    """An explained image as a case's heading shows it: file, label, call and its tile
    (``confidence``: the top class's probability; ``None`` for a multi-label model)."""

    path: str
    label: str
    prediction: str
    confidence: float | None
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
    index: int,
    image: str,
    explanations: Explanations,
    row: Mapping[Hashable, Any],
    multi_label: bool,
) -> tuple[PanelGroup, ...]:
    """Per explained case of the image (its ``predictions.csv`` ``row``), every method's map."""
    titles = {d.key: d.title for d in explanations.methods}
    groups = []
    for case in (c for c in explanations.cases if c.index == index):
        found = explanations.maps.of(case, titles)
        panels = [
            Panel(titles[key], overlay_tile(explanations.images[index], scaled(values)))
            for key, values in found.items()
        ]
        target = explanations.classes[case.target]
        probability = float(row[f"p_{target}"]) if multi_label else None
        if panels:
            groups.append(
                PanelGroup(
                    target,
                    case.role,
                    role_words(case.role),
                    tuple(panels),
                    _rows(image, panels),
                    probability,
                )
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
    rows = {int(r["index"]): r for r in predictions.to_dict("records")}
    multi_label = "confidence" not in predictions.columns  # a multi-label model's table
    views = []
    for index in indices:
        row = rows[index]
        label, prediction = str(row["label"]), str(row["prediction"])
        image = image_tile(explanations.images[index]) if index in explanations.images else ""
        views.append(
            CaseView(
                index=index,
                path=str(row["path"]),
                label=label,
                prediction=prediction,
                confidence=None if multi_label else float(row["confidence"]),
                wrong=label != prediction,
                image=image,
                groups=_groups(index, image, explanations, row, multi_label),
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
