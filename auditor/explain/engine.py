"""Explain stage: run every registered method over the selected images, batched.

All gradient methods come from one forward and one backward pass per batch: the
target-layer output is tapped (:mod:`auditor.taps`) and one ``torch.autograd.grad``
call returns the gradients w.r.t. both the input and that output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from auditor.data import Dataset
from auditor.explain import METHODS, GradientMethod, GradientPasses
from auditor.images import Preprocessing, read_image
from auditor.load import LoadedModel, OutputKind, first_line, target_scores
from auditor.select import Selection

__all__ = ["Case", "Explanations", "explain_cases", "gradient_passes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One (image, target class) pair to explain.

    Attributes:
        index: Sample index of the image.
        group: ``"misclassified"`` or ``"sampled"`` (an image in both is ``misclassified``).
        role: ``"predicted"`` or ``"true"`` (the class the map explains).
        target: Class index explained.
    """

    index: int
    group: str
    role: str
    target: int


@dataclass(frozen=True)
class Explanations:
    """Maps for the selected cases.

    Attributes:
        layer: Target layer of the layer-based methods, or ``None`` if the model has none.
        records: One row per case and method: ``index, path, group, role, target, method,
            status, detail`` (status ``ok`` or ``failed``).
        maps: ``(index, role, method)`` → ``(H, W)`` float32 map before min-max.
        images: Sample index → ``(H, W, C)`` float32 display image in [0, 1] (missing if
            the file could no longer be read; its records say so).
    """

    layer: str | None
    records: pd.DataFrame
    maps: dict[tuple[int, str, str], np.ndarray] = field(repr=False)
    images: dict[int, np.ndarray] = field(repr=False)


def gradient_passes(
    model: LoadedModel,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kind: OutputKind,
    layer: str | None,
) -> GradientPasses:
    """One forward and one backward pass for ``(B, C, H, W)`` inputs and ``(B,)`` targets."""
    inputs = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        output, taps = model.tapped(inputs, [layer] if layer else [])
        score = target_scores(output, kind, targets).sum()
        grads = torch.autograd.grad(score, [inputs, *taps])
    empty = torch.empty(0, device=inputs.device)
    return GradientPasses(
        inputs=inputs.detach(),
        input_grads=grads[0],
        activations=taps[0].detach() if taps else empty,
        activation_grads=grads[1] if taps else empty,
    )


def _cases(selection: Selection, predictions: pd.DataFrame, classes: tuple[str, ...]) -> list[Case]:
    """One case per (image, role); an image both misclassified and sampled is explained once."""
    rows = predictions.set_index("index")
    cases = []
    done: set[int] = set()
    for group, indices in (
        ("misclassified", selection.misclassified),
        ("sampled", selection.sampled),
    ):
        for index in indices:
            if index in done:
                continue
            done.add(index)
            row = rows.loc[index]
            cases.append(Case(index, group, "predicted", classes.index(str(row["prediction"]))))
            if not bool(row["correct"]):
                cases.append(Case(index, group, "true", classes.index(str(row["label"]))))
    return cases


def explain_cases(
    model: LoadedModel,
    dataset: Dataset,
    preprocessing: Preprocessing,
    predictions: pd.DataFrame,
    selection: Selection,
    kind: OutputKind,
    layer: str | None,
    batch_size: int,
) -> Explanations:
    """Compute every registered method for the selected images.

    Misclassified images are explained for the predicted and the true class; sampled
    images for the predicted class. A batch that fails becomes ``failed`` rows with the
    error, never a silent hole.
    """
    methods: list[GradientMethod] = [
        cls() for cls in METHODS.values() if layer is not None or not cls.uses_layer
    ]
    cases = _cases(selection, predictions, dataset.classes)
    images: dict[int, np.ndarray] = {}
    inputs: dict[int, torch.Tensor] = {}
    status: dict[tuple[int, str], tuple[str, str]] = {}
    for index in dict.fromkeys(case.index for case in cases):
        try:
            image, _ = read_image(dataset.samples[index].path)
        except OSError as error:  # changed or removed since it was evaluated
            status.update(
                {
                    (c.index, c.role): ("failed", first_line(error))
                    for c in cases
                    if c.index == index
                }
            )
            continue
        display = preprocessing.display(image)
        images[index] = display.permute(1, 2, 0).numpy()
        inputs[index] = preprocessing.normalise(display)
    maps: dict[tuple[int, str, str], np.ndarray] = {}
    readable = [case for case in cases if case.index in inputs]
    batches = [readable[i : i + batch_size] for i in range(0, len(readable), batch_size)]
    for batch in tqdm(batches, desc="explain", unit="batch", leave=False, disable=None):
        x = torch.stack([inputs[c.index] for c in batch]).to(model.device)
        targets = torch.tensor([c.target for c in batch], device=model.device)
        try:
            passes = gradient_passes(model, x, targets, kind, layer)
            results = {m.key: m.attribute(passes).cpu().numpy() for m in methods}
        except RuntimeError as error:
            log.warning("explanation batch failed: %s", error)
            for case in batch:
                status[(case.index, case.role)] = ("failed", first_line(error))
            continue
        for i, case in enumerate(batch):
            status[(case.index, case.role)] = ("ok", "")
            for key, values in results.items():
                maps[(case.index, case.role, key)] = values[i]
    records = pd.DataFrame(
        [
            {
                "index": case.index,
                "path": dataset.samples[case.index].relpath,
                "group": case.group,
                "role": case.role,
                "target": dataset.classes[case.target],
                "method": method.key,
                "status": status[(case.index, case.role)][0],
                "detail": status[(case.index, case.role)][1],
            }
            for case in cases
            for method in methods
        ],
        columns=["index", "path", "group", "role", "target", "method", "status", "detail"],
    ).astype(
        {
            "index": "int64",
            "path": "string",
            "group": "string",
            "role": "string",
            "target": "string",
            "method": "string",
            "status": "string",
            "detail": "string",
        }
    )
    return Explanations(layer=layer, records=records, maps=maps, images=images)


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
