"""Write the explain stage's arrays to the run folder, in documented layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from auditor.explain.engine import Explanations

__all__ = ["save_features", "save_maps"]


def save_maps(explanations: Explanations, path: Path) -> None:
    """Write the raw maps to ``path`` (``.npz``).

    Layout: ``maps`` is ``(N, H, W)`` float32, one map per row of ``index`` (sample
    index, int64), ``image`` (relative path), ``target`` (class name), ``role``
    (``predicted``/``true``) and ``method`` (registry key). Maps are at input
    resolution, after each method's post-processing and before min-max normalisation.
    """
    rows = explanations.records[explanations.records["status"] == "ok"]
    keys = [
        (int(index), str(role), str(method))
        for index, role, method in zip(rows["index"], rows["role"], rows["method"], strict=True)
    ]
    stacked = (
        np.stack([explanations.maps[k] for k in keys]) if keys else np.zeros((0, 0, 0), np.float32)
    )
    np.savez_compressed(
        path,
        maps=stacked.astype(np.float32),
        index=rows["index"].to_numpy(dtype=np.int64),
        image=rows["path"].to_numpy(dtype=str),
        target=rows["target"].to_numpy(dtype=str),
        role=rows["role"].to_numpy(dtype=str),
        method=rows["method"].to_numpy(dtype=str),
    )


def save_features(explanations: Explanations, path: Path) -> None:
    """Write the feature visualisation to ``path`` (``.npz``).

    Layout: ``filters`` ``(N, k, k, C)`` first-convolution filters scaled to [0, 1] (absent
    if the model has no convolution); ``stages`` the module paths; for each shown image
    (``images``, sample indices) and stage ``s``: ``channels_<index>_<s>`` ``(k,)`` and
    ``maps_<index>_<s>`` ``(k, H, W)`` float32 activations of the strongest channels.
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
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
