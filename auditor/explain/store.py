"""The explain stage's cases and maps, and their files in the run folder.

A :class:`Case` is one (image, target class) pair; a :class:`MapStore` holds one map
per case and method. :func:`save_maps` and :func:`save_features` write the stage's
arrays in documented layouts.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the engine builds Explanations from the types here
    from auditor.concepts.maximise import Maximised
    from auditor.explain.engine import Explanations

__all__ = ["Case", "MapStore", "ok_maps", "save_features", "save_maps", "write_npz"]


@dataclass(frozen=True)
class Case:
    """One (image, target class) pair to explain.

    An image is explained once per role, so ``(index, role)`` identifies a case.

    Attributes:
        index: Sample index of the image.
        group: ``"misclassified"`` or ``"sampled"`` (an image in both is ``misclassified``).
        role: ``"predicted"`` or ``"true"`` (the class the map explains); a multi-label
            model's ``"predicted:<label>"`` (a label called positive) or
            ``"missed:<label>"`` (a label the image has, not called).
        target: Class index explained.
    """

    index: int
    group: str
    role: str
    target: int


class MapStore:
    """``(H, W)`` float32 maps at input resolution, before min-max, by case and method."""

    def __init__(self) -> None:
        self._maps: dict[tuple[int, str, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def put(self, case: Case, method: str, value: np.ndarray) -> None:
        """Keep ``value`` as ``case``'s map by ``method`` (replacing any earlier one)."""
        self._maps[(case.index, case.role, method)] = value

    def get(self, case: Case, method: str) -> np.ndarray | None:
        """``case``'s map by ``method``, or ``None`` if the method gave it none."""
        return self._maps.get((case.index, case.role, method))

    def of(self, case: Case, methods: Iterable[str]) -> dict[str, np.ndarray]:
        """Method → ``case``'s map, for the ``methods`` (in their order) that gave one."""
        found = ((method, self.get(case, method)) for method in methods)
        return {method: value for method, value in found if value is not None}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed``'s layout (``np.load`` reads it), with every member dated
    1980-01-01: numpy stamps each member with the time it was written, so two runs with
    the same results would give files that differ in those bytes alone."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def ok_maps(explanations: Explanations) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``ok`` rows of ``explanations.csv`` and their maps, stacked ``(N, H, W)``."""
    rows = explanations.records[explanations.records["status"] == "ok"]
    maps = []
    for index, role, method in zip(rows["index"], rows["role"], rows["method"], strict=True):
        case = explanations.case(int(index), str(role))
        value = None if case is None else explanations.maps.get(case, str(method))
        if value is None:
            raise RuntimeError(f"the ok row ({index}, {role}, {method}) has no map")
        maps.append(value)
    return rows, np.stack(maps) if maps else np.zeros((0, 0, 0), np.float32)


def save_maps(explanations: Explanations, path: Path) -> None:
    """Write the raw maps to ``path`` (``.npz``).

    Layout: ``maps`` is ``(N, H, W)`` float32, one map per row of ``index`` (sample
    index, int64), ``image`` (relative path), ``target`` (class name), ``role``
    (``predicted``/``true``; a multi-label model's ``predicted:<label>``/``missed:<label>``)
    and ``method`` (registry key). Maps are at input
    resolution, after each method's post-processing and before min-max normalisation.
    Rows follow ``explanations.csv``'s ``ok`` rows.
    """
    rows, stacked = ok_maps(explanations)
    write_npz(
        path,
        {
            "maps": stacked.astype(np.float32),
            "index": rows["index"].to_numpy(dtype=np.int64),
            "image": rows["path"].to_numpy(dtype=str),
            "target": rows["target"].to_numpy(dtype=str),
            "role": rows["role"].to_numpy(dtype=str),
            "method": rows["method"].to_numpy(dtype=str),
        },
    )


def save_features(
    explanations: Explanations, path: Path, maximised: Maximised | None = None
) -> None:
    """Write the feature visualisation to ``path`` (``.npz``).

    Layout: ``filters`` ``(N, k, k, C)`` first-convolution filters scaled to [0, 1] (absent
    if the model has no convolution); ``stages`` the module paths; for each shown image
    (``images``, sample indices) and stage ``s``: ``channels_<index>_<s>`` ``(k,)`` and
    ``maps_<index>_<s>`` ``(k, H, W)`` float32 activations of the strongest channels.
    With activation maximisation: ``maximised`` ``(N, C, S, S)`` float32 images in [0, 1],
    ``maximised_names`` what each raises, ``maximised_layers`` (``""`` for a class's
    score), ``maximised_indices`` (the class or unit) and ``maximised_values`` (the
    objective on the final image).
    """
    arrays: dict[str, np.ndarray] = {
        "stages": np.array([stage.path for stage in explanations.features.stages], dtype=str),
        "images": np.array(list(explanations.features.maps), dtype=np.int64),
    }
    if explanations.filters is not None:
        arrays["filters"] = explanations.filters.astype(np.float32)
    for index, per_stage in explanations.features.maps.items():
        for s, (channels, maps) in enumerate(per_stage):
            arrays[f"channels_{index}_{s}"] = channels.astype(np.int64)
            arrays[f"maps_{index}_{s}"] = maps.astype(np.float32)
    if maximised is not None:
        objectives = maximised.objectives
        arrays["maximised"] = maximised.images
        arrays["maximised_names"] = np.array([o.name for o in objectives], dtype=str)
        arrays["maximised_layers"] = np.array([o.layer or "" for o in objectives], dtype=str)
        arrays["maximised_indices"] = np.array([o.index for o in objectives], dtype=np.int64)
        arrays["maximised_values"] = maximised.values.astype(np.float32)
    write_npz(path, arrays)
