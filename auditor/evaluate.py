"""Evaluate stage: stream the validation set through the model and compute the metrics.

Memory does not grow with the number of images beyond per-image scalars (label,
class probabilities, file hash): images are dropped as soon as their batch is scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from auditor.checkpoint import Memo
from auditor.data import Dataset, Exclusion, Sample
from auditor.distributed import sharded, world
from auditor.errors import DataError, ModelError
from auditor.images import Preprocessing, channel_statistics, make_loader
from auditor.load import (
    MODEL_ERRORS,
    LoadedModel,
    OutputKind,
    check_output,
    detect_output_kind,
    forward_failed,
    to_probabilities,
)
from auditor.metrics import Metrics, compute_metrics
from auditor.multilabel.evaluation import label_evaluation
from auditor.multilabel.metrics import LabelMetrics
from auditor.multilabel.settings import probabilities_check
from auditor.predictions import data_entry, data_sha256, predictions_frame
from auditor.resample import Resampling
from auditor.settings import inherited, setting
from auditor.similarity.embeddings import EmbeddingSite, EmbeddingStore

if TYPE_CHECKING:  # the check runs the model through this module's run_model
    from auditor.precision import PrecisionCheck

__all__ = [
    "PRECISIONS",
    "Evaluation",
    "EvaluationSettings",
    "data_entry",
    "data_sha256",
    "evaluate",
    "probe_output_kind",
]


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``precision`` → the dtype its forward passes are autocast to (``None``: float32)."""


@dataclass(frozen=True)
class EvaluationSettings:
    """How the evaluation runs: one declaration per setting (see :mod:`auditor.settings`).

    ``batch_size``, ``workers`` and ``seed`` are the run's (declared in
    :class:`auditor.config.AuditConfig`): the explanation stages use them too.
    """

    bootstrap: int = setting(
        1000,
        help="Bootstrap resamples for the 95% confidence intervals",
        unit="resamples",
        minimum=100,
        flag=True,
    )
    precision: str = setting(
        "fp32",
        help="The evaluation's arithmetic: float32, or mixed precision (autocast to "
        "bfloat16 or float16: faster on a GPU); explanations always run in float32",
        choices=tuple(PRECISIONS),
        flag=True,
    )
    precision_check: int = setting(
        256,
        help="Evaluated images run again in float32 (a seeded sample) to measure what mixed "
        "precision changed; 0 skips the check",
        unit="images",
        minimum=0,
    )
    batch_size: int = inherited("batch_size", 32)
    workers: int = inherited("workers", 0)
    label_thresholds: tuple[float, ...] = setting(
        (0.5,),
        help="A multi-label model's decision thresholds: an image is called positive for a "
        "label when its probability is at or above the label's threshold; one value for "
        "every label, or one per label in label order",
        check=probabilities_check,
        items="probabilities",
    )
    seed: int = inherited("seed", 0)
    patient_column: str | None = inherited("patient_column", None)


@dataclass(frozen=True)
class Evaluation:
    """What the evaluation produced.

    Attributes:
        predictions: One row per evaluated image: ``index, path, label, prediction,
            confidence, correct, p_<class>...``, the manifest's metadata and ``sha256``.
        excluded: One row per excluded file: ``path, reason``.
        output_kind: How the model's output was read.
        metrics: Headline, per-class and calibration metrics (``None`` for a multi-label
            model: see ``label_metrics``).
        data_sha256: SHA-256 over the sorted lines of each image's relative path, file
            SHA-256, class and metadata (:func:`data_sha256`).
        seconds: Wall time of the pass over the data.
        settings: How it ran.
        embeddings: Each scored image's embedding, in the order of ``predictions`` (when
            an embedding site was given).
        intensities: ``(N, 2C)`` float32, each scored image's per-channel mean then
            standard deviation of its pixels in [0, 1] (before the normalisation), in the
            order of ``predictions``: what the comparison of two audits' inputs reads.
        precision_check: What mixed precision changed against float32, on a sample
            (``None`` in float32; see :mod:`auditor.precision`).
        label_metrics: A multi-label model's per-label and whole-set metrics (``None``
            for a single-label model); its ``predictions`` are those of
            :func:`auditor.multilabel.evaluation.label_frame`.
    """

    predictions: pd.DataFrame
    excluded: pd.DataFrame
    output_kind: OutputKind
    metrics: Metrics | None
    data_sha256: str
    seconds: float
    settings: EvaluationSettings
    embeddings: EmbeddingStore | None = None
    intensities: np.ndarray | None = None
    precision_check: PrecisionCheck | None = None
    label_metrics: LabelMetrics | None = None

    @property
    def n_images(self) -> int:
        """Images evaluated."""
        return len(self.predictions)

    @property
    def class_counts(self) -> tuple[tuple[str, int], ...]:
        """Each class's images evaluated, in output order (a multi-label model's: each
        label's)."""
        if self.label_metrics is not None:
            return tuple((r.name, r.positives) for r in self.label_metrics.labels)
        assert self.metrics is not None, "an evaluation has one kind of metrics or the other"
        return tuple((c.name, c.support) for c in self.metrics.per_class)


def run_model(
    model: LoadedModel,
    images: torch.Tensor,
    site: EmbeddingSite | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's raw output for a batch and, with a ``site``, the ``(B, D)`` embeddings
    tapped in the same pass; a failing forward pass becomes a ModelError.
    A ``precision`` other than ``fp32`` runs the pass under ``torch.autocast`` to it and
    returns the output in float32 (the embeddings are float32 either way).

    Raises:
        ModelError: The model raised, typically because the input size or channels do
            not fit it; the message gives the model's first line and what to try.
    """
    inputs = images.to(model.device, non_blocking=True)
    dtype = PRECISIONS[precision]
    try:
        with torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None):
            if site is None:
                output, vectors = model.module(inputs), None
            else:
                output, (tapped,) = model.tapped(inputs, site.paths, site.addresses)
                vectors = site.reduce(tapped)
    except MODEL_ERRORS as error:
        hint = "check --image-size, --mean/--std and that the images match the model's input"
        raise forward_failed(model.path.name, tuple(images.shape), error, hint) from None
    return (output if dtype is None else output.float()), vectors


def probe_output_kind(
    model: LoadedModel, dataset: Dataset, preprocessing: Preprocessing
) -> OutputKind:
    """Run the first readable images once to learn how to read the output.

    Done before anything is written, so that a model that does not fit the data fails
    with a clear error and no run folder. Reads on until it has 8 readable images (or
    the data set ends), so unreadable files at the start do not stop the run.

    Raises:
        ModelError: The model fails on the images, or its output does not fit the classes.
        DataError: No image of the data set can be read.
    """
    readable: list[torch.Tensor] = []
    for batch in make_loader(dataset.samples, preprocessing, batch_size=8):
        readable.extend(batch.images)
        if len(readable) >= 8:
            break
    if not readable:
        raise DataError(
            f"none of the {len(dataset.samples)} images in {str(dataset.source)!r} can be read "
            f"(e.g. {dataset.samples[0].relpath}); check the files"
        )
    with torch.inference_mode():
        output, _ = run_model(model, torch.stack(readable[:8]))
    return detect_output_kind(output, dataset.classes, model.path.name, dataset.multi_label)


@dataclass
class _Scores:
    """What the pass over the data collects, batch by batch."""

    indices: list[np.ndarray]
    probabilities: list[np.ndarray]
    intensities: list[np.ndarray]
    hashes: dict[int, str]
    failures: list[tuple[int, str, str]]  # (index, reason, file SHA-256)
    embeddings: list[np.ndarray] = field(default_factory=list)

    def merge(self, part: _Scores, store: EmbeddingStore | None) -> None:
        """Append a chunk's scores; its embeddings go to ``store`` (memory stays bounded)."""
        self.indices += part.indices
        self.probabilities += part.probabilities
        self.intensities += part.intensities
        self.hashes.update(part.hashes)
        self.failures += part.failures
        if store is not None:
            for vectors in part.embeddings:
                store.add(torch.from_numpy(vectors))


CHUNK_IMAGES = 4096
"""Images per chunk of the evaluation that a resumable run saves (whole batches)."""


def _score(
    model: LoadedModel,
    dataset: Dataset,
    samples: Sequence[Sample],
    preprocessing: Preprocessing,
    kind: OutputKind,
    settings: EvaluationSettings,
    site: EmbeddingSite | None,
) -> _Scores:
    """Stream ``samples`` through the model once; non-finite outputs become failures.
    With a ``site``, each scored image's embedding is kept too."""
    loader = make_loader(
        samples,
        preprocessing,
        settings.batch_size,
        settings.workers,
        pin_memory=model.device.type == "cuda",
    )
    scores = _Scores([], [], [], {}, [])
    with torch.inference_mode():
        for batch in tqdm(loader, desc="evaluate", unit="batch", leave=False, disable=None):
            scores.failures.extend(
                (index, reason, sha)
                for (index, reason), sha in zip(batch.failures, batch.failure_hashes, strict=True)
            )
            if not batch.images.numel():
                continue
            # on the model's device: the channel statistics are computed there too, rather
            # than on the CPU while the GPU waits (half the GPU's throughput, measured)
            images = batch.images.to(model.device, non_blocking=True)
            output, vectors = run_model(model, images, site, settings.precision)
            finite = check_output(
                output, kind, len(dataset.classes), len(batch.indices), model.path.name
            ).cpu()
            if vectors is not None:
                scores.embeddings.append(
                    vectors[finite.to(vectors.device)].detach().float().cpu().numpy()
                )
            scores.probabilities.append(
                to_probabilities(output, kind)[finite.to(output.device)].cpu().numpy()
            )
            scores.indices.append(batch.indices[finite].numpy())
            scores.intensities.append(channel_statistics(images, preprocessing)[finite.numpy()])
            scores.hashes.update(zip(batch.indices.tolist(), batch.hashes, strict=True))
            scores.failures.extend(
                (
                    int(index),
                    "the model's output for this image is not finite (NaN or inf)",
                    scores.hashes[int(index)],
                )
                for index in batch.indices[~finite].tolist()
            )
    return scores


def _scored(
    dataset: Dataset, order: np.ndarray, probs: np.ndarray, hashes: dict[int, str],
    settings: EvaluationSettings,
) -> tuple[pd.DataFrame, Metrics | None, LabelMetrics | None]:  # fmt: skip
    """The predictions table and the metrics: a single-label model's, or a multi-label
    model's (:func:`auditor.multilabel.evaluation.label_evaluation`)."""
    if dataset.multi_label:
        predictions, label_metrics = label_evaluation(dataset, order, probs, hashes, settings)
        return predictions, None, label_metrics
    labels = np.array([dataset.samples[i].label for i in order], dtype=np.int64)
    predictions = predictions_frame(dataset, order, labels, probs, hashes)
    resampling = Resampling.of(predictions, settings.patient_column)
    metrics = compute_metrics(
        labels, probs, dataset.classes, settings.bootstrap, settings.seed, resampling
    )
    return predictions, metrics, None


def _chunks(
    samples: Sequence[Sample],
    settings: EvaluationSettings,
    score: Callable[..., _Scores],
    memo: Memo | None,
    chunk_images: int,
) -> list[_Scores]:
    """Each chunk's scores, in order: chunks of whole batches, so that a chunk's batches
    are an unchunked pass's; ``chunk_images`` when chunks are saved (``memo``), about a
    quarter of each rank's share in a sharded run (so that the ranks finish together),
    else everything in one."""
    batch = settings.batch_size
    step = max(1, chunk_images // batch) * batch if memo is not None else max(1, len(samples))
    if world().size > 1:
        step = min(step, max(1, -(-len(samples) // batch) // (4 * world().size)) * batch)

    def chunk_scores(start: int) -> _Scores:
        scored = partial(score, samples=samples[start : start + step], settings=settings)
        return memo(f"evaluate-{start:09d}", scored) if memo else scored()

    return sharded(range(0, len(samples), step), chunk_scores)


def evaluate(
    model: LoadedModel,
    dataset: Dataset,
    preprocessing: Preprocessing,
    kind: OutputKind,
    settings: EvaluationSettings,
    site: EmbeddingSite | None = None,
    memo: Memo | None = None,
    chunk_images: int = CHUNK_IMAGES,
) -> Evaluation:
    """Score every image once, in batches, and compute the metrics; with a ``site``, keep
    each scored image's embedding. With a ``memo``, each chunk of ``chunk_images`` (whole
    batches: an unchunked pass's) is saved as it ends, and read back by a resumed run.

    Raises:
        DataError: No image of the data set could be read.
    """
    started = time.perf_counter()
    store = EmbeddingStore(len(dataset.samples)) if site is not None else None
    scores = _Scores([], [], [], {}, [])
    score = partial(_score, model, dataset, preprocessing=preprocessing, kind=kind, site=site)
    for part in _chunks(dataset.samples, settings, score, memo, chunk_images):
        scores.merge(part, store)
    seconds = time.perf_counter() - started
    failures, hashes = scores.failures, scores.hashes
    excluded = [
        *dataset.excluded,
        *(Exclusion(dataset.samples[i].relpath, r) for i, r, _ in failures),
    ]
    paths, reasons = [e.relpath for e in excluded], [e.reason for e in excluded]
    excluded_frame = pd.DataFrame({"path": paths, "reason": reasons}, dtype="string")
    if not scores.indices:
        raise DataError(
            f"none of the {len(dataset.samples)} images in {str(dataset.source)!r} could be read "
            f"(e.g. {excluded[0].relpath}: {excluded[0].reason})"
        )
    order = np.concatenate(scores.indices)
    if not order.size:
        raise ModelError(
            f"{model.path.name!r} gave no finite score (its output is NaN or inf) for any of "
            f"the {len(hashes)} images it ran on; check the model file and its input "
            f"normalisation (--mean/--std)"
        )
    probs = np.concatenate(scores.probabilities).astype(np.float32)
    predictions, metrics, label_metrics = _scored(dataset, order, probs, hashes, settings)
    entries = [data_entry(dataset, i, hashes[i]) for i in order.tolist()]
    entries += [data_entry(dataset, i, sha) for i, _, sha in failures]
    entries += [(e.relpath, "") for e in dataset.excluded]
    return Evaluation(
        predictions, excluded_frame, kind, metrics, data_sha256(entries), seconds, settings,
        store if store is not None and store.rows else None, np.concatenate(scores.intensities),
        label_metrics=label_metrics,
    )  # fmt: skip
