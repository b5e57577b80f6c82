"""Network dissection's files: ``dissection.csv`` and ``metrics.json``'s ``dissection``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditor.concepts.stage import LayerDissection, NetworkDissection

__all__ = ["DISSECTION_COLUMNS", "artifact_units", "dissection_document", "dissection_frame"]

DISSECTION_COLUMNS: dict[str, str] = {
    "layer": "string",
    "unit": "int64",
    "concept": "string",
    "iou": "float64",
    "threshold": "float64",
    "threshold_exact": "bool",
    "label": "bool",
}
"""``dissection.csv``: one row per layer, unit and concept; ``label`` marks the unit's
label (its best concept, when the IoU reaches ``dissection-iou``)."""


def dissection_frame(result: NetworkDissection) -> pd.DataFrame:
    """Every unit's IoU with every concept, layer by layer."""
    rows = []
    for layer in result.layers:
        thresholds = layer.dissection.thresholds
        for unit in range(len(layer.labels)):
            for k, concept in enumerate(result.concepts):
                rows.append((
                    layer.path, unit, concept, float(layer.dissection.iou[unit, k]),
                    float(thresholds.values[unit]), bool(thresholds.exact[unit]),
                    bool(layer.labels[unit] == k),
                ))  # fmt: skip
    return pd.DataFrame(rows, columns=list(DISSECTION_COLUMNS)).astype(DISSECTION_COLUMNS)


def artifact_units(
    result: NetworkDissection, layer: LayerDissection
) -> list[tuple[int, str, float]]:
    """``(unit, concept, IoU)`` of the layer's units labelled with an artefact concept,
    best IoU first."""
    found = [
        (unit, result.concepts[k], float(layer.dissection.iou[unit, k]))
        for unit, k in enumerate(layer.labels.tolist())
        if k >= 0 and result.concepts[k] in result.data.artifacts
    ]
    return sorted(found, key=lambda f: (-f[2], f[0]))


def _concept_rows(result: NetworkDissection) -> list[dict[str, Any]]:
    data = result.data
    return [
        {
            "name": name,
            "kind": "declared" if name in data.declared else "computed",
            "artifact": name in data.artifacts,
            "annotated": int(result.annotated[k]),
            "present": int(result.present[k]),
        }
        for k, name in enumerate(result.concepts)
    ]


def _layer_row(result: NetworkDissection, layer: LayerDissection) -> dict[str, Any]:
    labels = layer.labels.tolist()
    return {
        "layer": layer.path,
        "units": len(labels),
        "labelled": {c: labels.count(k) for k, c in enumerate(result.concepts)},
        "artifact_units": [
            {"unit": unit, "concept": concept, "iou": iou}
            for unit, concept, iou in artifact_units(result, layer)
        ],
        "exact_thresholds": bool(layer.dissection.thresholds.exact.all()),
    }


def dissection_document(result: NetworkDissection | None) -> dict[str, Any] | None:
    """``metrics.json``'s ``dissection`` (``None`` when it did not run)."""
    if result is None:
        return None
    layers = [_layer_row(result, layer) for layer in result.layers]
    return {
        "images": len(result.indices),
        "unreadable": result.unreadable,
        "quantile": result.settings.dissection_quantile,
        "iou_threshold": result.settings.dissection_iou,
        "concepts": _concept_rows(result),
        "layers": layers,
        "artifact_units": sum(len(row["artifact_units"]) for row in layers),
    }
