"""Robustness stage: run the model on perturbed copies of the evaluated images.

Each chosen image is read once (as a display image: resized and cropped, not
normalised); each perturbation at each severity is applied to the whole batch, which
is then normalised and scored in one forward pass. Nothing else runs per perturbed
image, so the stage costs about its forward passes (``benchmarks/bench_robustness.py``
prints the ratio).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader
from tqdm import tqdm

from auditor.data import Dataset
from auditor.evaluate import run_model
from auditor.images import Preprocessing, make_loader
from auditor.load import LoadedModel, OutputKind, check_output, to_probabilities
from auditor.multilabel.evaluation import label_set
from auditor.multilabel.metrics import called
from auditor.robustness.perturbations import PERTURBATIONS, Perturbation
from auditor.robustness.settings import RobustnessSettings

__all__ = ["Perturbed", "Variant", "perturbed_predictions", "variants"]


@dataclass(frozen=True)
class Variant:
    """One perturbation at one severity."""

    perturbation: Perturbation
    severity: float

    @property
    def level(self) -> str:
        """The severity as the report writes it: ``"σ 0.05"``."""
        return self.perturbation.level.format(self.severity)


def variants(settings: RobustnessSettings) -> tuple[Variant, ...]:
    """Every perturbation at each of its declared severities, mild to severe."""
    return tuple(Variant(p, float(s)) for p in PERTURBATIONS for s in getattr(settings, p.setting))


@dataclass(frozen=True)
class Perturbed:
    """The model's predictions on the perturbed images.

    Attributes:
        frame: One row per (image, variant): ``index`` (the sample), ``perturbation``,
            ``severity``, ``prediction`` (class name, or a multi-label model's called
            set as ``predictions.csv`` writes it; empty when the output was not finite),
            ``confidence`` and ``p_positive`` (NaN without a positive class, and for a
            multi-label model).
        images: Images run (after the sample).
        unreadable: Chosen images that could no longer be read (left out).
        examples: ``(V, C, H, W)`` the first image under every variant, for the report.
        seconds: Wall time of the stage.
        passes: Perturbed images scored.
        settings: How it ran.
    """

    frame: pd.DataFrame
    images: int
    unreadable: int
    examples: torch.Tensor | None
    seconds: float
    passes: int
    settings: RobustnessSettings


def _chosen(predictions: pd.DataFrame, limit: int, seed: int) -> np.ndarray:
    """Sample indices of the evaluated images to perturb: all, or a seeded sample of ``limit``."""
    indices = predictions["index"].to_numpy(dtype=np.int64)
    if indices.size <= limit:
        return np.sort(indices)
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(indices, size=limit, replace=False))


def _score(
    model: LoadedModel, images: torch.Tensor, kind: OutputKind, classes: tuple[str, ...],
    reading: tuple[int | None, NDArray[np.float64] | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The prediction cells ("" where the output is not finite), confidence and the
    positive class's probability. ``reading`` is the positive class's index and, for a
    multi-label model, the labels' thresholds: its cell is the called set (``a;b``, ``-``
    for none) and its confidence and positive probability NaN."""
    positive, thresholds = reading
    output, _ = run_model(model, images)
    finite = check_output(output, kind, len(classes), images.shape[0], model.path.name).cpu()
    probabilities = to_probabilities(output, kind).cpu()
    nothing = np.full(images.shape[0], np.nan, dtype=np.float32)
    if thresholds is not None:
        calls = called(probabilities.numpy(), thresholds)
        ok = finite.tolist()
        cells = [label_set(row, classes) if ok[i] else "" for i, row in enumerate(calls)]
        return np.array(cells, dtype=object), nothing, nothing
    names = np.array([*classes, ""], dtype=object)  # -1: no finite output
    predicted = names[torch.where(finite, probabilities.argmax(dim=1), -1).numpy()]
    confidence = torch.where(finite, probabilities.max(dim=1).values, torch.nan).numpy()
    p_positive = (
        torch.where(finite, probabilities[:, positive], torch.nan).numpy()
        if positive is not None
        else nothing
    )
    return predicted, confidence, p_positive


def _frame(columns: dict[str, list[np.ndarray]], every: tuple[Variant, ...]) -> pd.DataFrame:
    """``robustness_predictions.csv``'s rows from the per-batch arrays."""
    which = np.concatenate(columns["variant"])
    return pd.DataFrame(
        {
            "index": pd.Series(np.concatenate(columns["index"]), dtype="int64"),
            "perturbation": pd.Series([every[v].perturbation.name for v in which], dtype="string"),
            "severity": pd.Series([every[v].severity for v in which], dtype="float64"),
            "prediction": pd.Series(np.concatenate(columns["pred"]), dtype="string"),
            "confidence": pd.Series(np.concatenate(columns["conf"]), dtype="float64"),
            "p_positive": pd.Series(np.concatenate(columns["p"]), dtype="float64"),
        }
    )


def _run(
    model: LoadedModel, loader: DataLoader[Any], preprocessing: Preprocessing, kind: OutputKind,
    every: tuple[Variant, ...],
    reading: tuple[tuple[str, ...], int | None, NDArray[np.float64] | None, int],
) -> tuple[dict[str, list[np.ndarray]], list[torch.Tensor], int]:  # fmt: skip
    """Every batch under every variant, one forward pass each: the per-batch arrays, the
    first image's perturbed versions and the count of unreadable images. ``reading`` is
    the classes, the positive class's index, a multi-label model's thresholds and the
    seed."""
    classes, positive, thresholds, seed = reading
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("index", "variant", "pred", "conf", "p")
    }
    examples: list[torch.Tensor] = []
    unreadable = 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc="robustness", unit="batch", leave=False, disable=None):
            unreadable += len(batch.failures)
            if not batch.images.numel():
                continue
            for v, variant in enumerate(every):
                perturbed = variant.perturbation.apply(
                    batch.images, variant.severity, batch.indices, seed
                )
                if len(examples) < len(every):
                    examples.append(perturbed[0])
                predicted, confidence, p_positive = _score(
                    model, preprocessing.normalise(perturbed), kind, classes,
                    (positive, thresholds),
                )  # fmt: skip
                columns["index"].append(batch.indices.numpy())
                columns["variant"].append(np.full(len(predicted), v))
                columns["pred"].append(predicted)
                columns["conf"].append(confidence)
                columns["p"].append(p_positive)
    return columns, examples, unreadable


def perturbed_predictions(
    model: LoadedModel,
    dataset: Dataset,
    preprocessing: Preprocessing,
    kind: OutputKind,
    predictions: pd.DataFrame,
    settings: RobustnessSettings,
    positive: int | None,
    thresholds: NDArray[np.float64] | None = None,
) -> Perturbed | None:
    """Score the evaluated images under every variant, or ``None`` when switched off.

    Args:
        predictions: ``predictions.csv``'s frame: which images were evaluated.
        positive: Index of the positive class, or ``None``.
        thresholds: A multi-label model's label thresholds (its calls are sets).
    """
    if settings.robustness_images == 0:
        return None
    started = time.perf_counter()
    chosen = _chosen(predictions, settings.robustness_images, settings.seed)
    display = replace(preprocessing, mean=None, std=None)
    loader = make_loader(
        [dataset.samples[i] for i in chosen.tolist()], display, settings.batch_size,
        settings.workers,
    )  # fmt: skip
    every = variants(settings)
    columns, examples, unreadable = _run(
        model, loader, preprocessing, kind, every,
        (dataset.classes, positive, thresholds, settings.seed),
    )  # fmt: skip
    if not columns["index"]:
        return None
    frame = _frame(columns, every)
    frame = frame.sort_values(["perturbation", "severity", "index"], kind="stable")
    return Perturbed(
        frame=frame.reset_index(drop=True),
        images=int(frame["index"].nunique()),
        unreadable=unreadable,
        examples=torch.stack(examples) if len(examples) == len(every) else None,
        seconds=time.perf_counter() - started,
        passes=len(frame),
        settings=settings,
    )
