"""Report views of the explanations: the methods table and one panel per explained case.

Aggregation only: it reads :class:`auditor.explain.engine.Explanations` records and
draws the overlay tiles; the template lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from auditor.explain.engine import Explanations, MethodDescription
from auditor.explain.postprocess import minmax
from auditor.report.figures import activation_tile, image_tile, overlay_tile

__all__ = [
    "CaseView",
    "FeatureRow",
    "MethodView",
    "Panel",
    "PanelGroup",
    "case_views",
    "feature_rows",
    "method_views",
]


@dataclass(frozen=True)
class MethodView:
    """One row of the methods table.

    Attributes:
        cost: Passes per image in words, e.g. ``"shared passes"`` or ``"256 forward"``.
        seconds_per_map: Mean seconds per map on this run's device, beyond the shared
            gradient passes.
    """

    key: str
    title: str
    paper: str
    implementation: str
    layer: str
    steps: str
    settings: str
    reading: str
    caveat: str
    cost: str
    seconds_per_map: float


@dataclass(frozen=True)
class Panel:
    """One heat map of a case: which method, as a PNG data URI."""

    method: str
    image: str


@dataclass(frozen=True)
class PanelGroup:
    """Every method's map of one case for one target class."""

    target: str
    role: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class CaseView:
    index: int
    path: str
    label: str
    prediction: str
    confidence: float
    image: str
    groups: tuple[PanelGroup, ...]
    note: str


def _cost(description: MethodDescription) -> str:
    parts = []
    if description.passes.forward:
        parts.append(f"{description.passes.forward:,} forward")
    if description.passes.backward:
        parts.append(f"{description.passes.backward:,} forward+backward")
    return " + ".join(parts) if parts else "shared passes"


def method_views(explanations: Explanations) -> tuple[MethodView, ...]:
    """The methods that ran, with their cost on this run."""
    ok = explanations.records[explanations.records["status"] == "ok"]
    maps = ok.groupby("method").size().to_dict() if len(ok) else {}
    views = []
    for d in explanations.methods:
        seconds = explanations.seconds.get(d.key, 0.0)
        count = int(maps.get(d.key, 0))
        views.append(
            MethodView(
                key=d.key,
                title=d.title,
                paper=d.paper,
                implementation=d.implementation,
                layer=d.layer,
                steps=" → ".join(d.steps) or "none",
                settings=d.settings,
                reading=d.reading,
                caveat=d.caveat,
                cost=_cost(d),
                seconds_per_map=seconds / count if count else float("nan"),
            )
        )
    return tuple(views)


def case_views(
    indices: tuple[int, ...], explanations: Explanations, predictions: pd.DataFrame
) -> tuple[CaseView, ...]:
    """One view per explained image: its tile and, per target class, every method's map."""
    rows = predictions.set_index("index")
    confidences = dict(
        zip(predictions["index"].tolist(), predictions["confidence"].tolist(), strict=True)
    )
    titles = {d.key: d.title for d in explanations.methods}
    records = explanations.records
    views = []
    for index in indices:
        row = rows.loc[index]
        mine = records[records["index"] == index]
        groups = []
        for role in ["predicted"] if bool(row["correct"]) else ["predicted", "true"]:
            panels = []
            for key in titles:
                map_key = (index, role, key)
                if map_key in explanations.maps:
                    normalised = minmax(torch.from_numpy(explanations.maps[map_key])[None])[0]
                    tile = overlay_tile(explanations.images[index], normalised.numpy())
                    panels.append(Panel(titles[key], tile))
            target = row["prediction"] if role == "predicted" else row["label"]
            if panels:
                groups.append(PanelGroup(str(target), role, tuple(panels)))
        failed = mine[mine["status"] != "ok"]
        problems = [
            f"{'all methods' if len(keys) == len(titles) else ', '.join(keys)}: {detail}"
            for detail, keys in failed.groupby("detail")["method"].agg(list).items()
        ]
        views.append(
            CaseView(
                index=index,
                path=str(row["path"]),
                label=str(row["label"]),
                prediction=str(row["prediction"]),
                confidence=confidences[index],
                image=image_tile(explanations.images[index])
                if index in explanations.images
                else "",
                groups=tuple(groups),
                note=f"explanation failed ({'; '.join(problems)})" if problems else "",
            )
        )
    return tuple(views)


@dataclass(frozen=True)
class FeatureRow:
    """One image's strongest activation maps: per stage, ``(stage, channel, tile)`` triples."""

    path: str
    image: str
    stages: tuple[tuple[str, tuple[tuple[int, str], ...]], ...]


def feature_rows(explanations: Explanations) -> tuple[FeatureRow, ...]:
    """The feature-visualisation rows of the images whose stage maps were kept."""
    paths = dict(zip(explanations.records["index"], explanations.records["path"], strict=True))
    features = explanations.features
    return tuple(
        FeatureRow(
            path=str(paths[index]),
            image=image_tile(explanations.images[index]),
            stages=tuple(
                (
                    stage.path,
                    tuple(
                        (int(channel), activation_tile(values))
                        for channel, values in zip(channels, maps, strict=True)
                    ),
                )
                for stage, (channels, maps) in zip(features.stages, per_stage, strict=True)
            ),
        )
        for index, per_stage in features.maps.items()
    )
