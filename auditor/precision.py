"""What mixed precision changed: a seeded sample of the evaluated images run again in
float32 and compared with the mixed-precision run (setting ``precision``).

Autocasting to bfloat16 keeps float32's range with 8 bits of mantissa (float16 keeps 11
bits and a narrower range), so a class probability moves in its third decimal and a
call near the threshold can flip. The check says by how much on this model and data,
in the report and in ``metrics.json``; the metrics themselves are the mixed-precision
run's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from auditor.data import Dataset
from auditor.evaluate import EvaluationSettings, run_model
from auditor.images import Preprocessing, make_loader
from auditor.load import LoadedModel, OutputKind, to_probabilities
from auditor.multilabel.evaluation import truth
from auditor.multilabel.metrics import called, label_thresholds

__all__ = ["PrecisionCheck", "check_precision", "precision_sentence"]

NAMES = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class PrecisionCheck:
    """The mixed-precision run against float32 on the same images.

    Attributes:
        precision: ``bf16`` or ``fp16``.
        images: Images run again in float32 (read again; an image unreadable the
            second time is left out).
        agree: Of those, the images whose predicted class (a multi-label model's: called
            set of labels) is the same.
        max_change: The largest absolute change of a class (or label) probability.
        accuracy_mixed: Accuracy (a multi-label model's: subset accuracy) on those
            images, mixed precision.
        accuracy_fp32: The same in float32.
    """

    precision: str
    images: int
    agree: int
    max_change: float
    accuracy_mixed: float
    accuracy_fp32: float


def check_precision(
    model: LoadedModel,
    dataset: Dataset,
    preprocessing: Preprocessing,
    kind: OutputKind,
    settings: EvaluationSettings,
    predictions: pd.DataFrame,
) -> PrecisionCheck | None:
    """Run up to ``precision-check`` evaluated images (seeded) again in float32; ``None``
    when the evaluation ran in float32 or the check is off."""
    if settings.precision == "fp32" or settings.precision_check == 0:
        return None
    rng = np.random.default_rng(settings.seed)
    evaluated = predictions["index"].to_numpy()
    chosen = np.sort(rng.choice(evaluated, min(settings.precision_check, len(evaluated)), False))
    samples = [dataset.samples[int(i)] for i in chosen]
    full: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        for batch in make_loader(samples, preprocessing, settings.batch_size, settings.workers):
            if batch.images.numel():
                output, _ = run_model(model, batch.images)
                found = to_probabilities(output, kind).cpu().numpy()
                full.update(zip(batch.indices.tolist(), found, strict=True))
    if not full:
        return PrecisionCheck(settings.precision, 0, 0, *(3 * [float("nan")]))
    order = sorted(full)
    columns = [f"p_{name}" for name in dataset.classes]
    mixed = predictions.set_index("index").loc[order, columns].to_numpy(dtype=np.float64)
    exact = np.stack([full[i] for i in order]).astype(np.float64)
    truth, calls_mixed, calls_fp32 = _calls(dataset, np.asarray(order), (mixed, exact), settings)
    return PrecisionCheck(
        settings.precision,
        len(order),
        int((calls_mixed == calls_fp32).all(axis=1).sum()),
        float(np.abs(mixed - exact).max()),
        float((calls_mixed == truth).all(axis=1).mean()),
        float((calls_fp32 == truth).all(axis=1).mean()),
    )


def _calls(
    dataset: Dataset,
    order: np.ndarray,
    probabilities: tuple[np.ndarray, np.ndarray],
    settings: EvaluationSettings,
) -> tuple[np.ndarray, ...]:
    """``(N, 1)`` true and called classes, or a multi-label model's ``(N, K)`` labels and
    calls at its thresholds, for the images ``order`` and each of ``probabilities``."""
    if dataset.multi_label:
        thresholds = label_thresholds(settings.label_thresholds, dataset.classes)
        return truth(dataset, order), *(called(p, thresholds) for p in probabilities)
    labels = np.array([dataset.samples[i].label for i in order.tolist()])[:, None]
    return labels, *(p.argmax(axis=1)[:, None] for p in probabilities)


def precision_sentence(check: PrecisionCheck | None) -> str:
    """The check in one sentence ("" when the evaluation ran in float32)."""
    if check is None:
        return ""
    name = NAMES[check.precision]
    changed = check.images - check.agree
    return (
        f"Evaluated in {name} mixed precision: on {check.images:,} images run again in "
        f"float32, {changed:,} call{'s' if changed != 1 else ''} changed and a class "
        f"probability moved by at most {check.max_change:.2g}; accuracy on them "
        f"{check.accuracy_mixed:.1%} against {check.accuracy_fp32:.1%} in float32."
    )
