"""Possible leakage between a training set and the validation set: training images whose
embedding nearly duplicates a validation image's, byte-identical files, and patients
in both sets.

The training set is read as ``--data`` is (a folder of class folders or a manifest) and
run through the model for its embeddings alone: no evaluation, no metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from auditor.data import Dataset
from auditor.evaluate import run_model
from auditor.images import Preprocessing, make_loader
from auditor.load import LoadedModel
from auditor.similarity.embeddings import EmbeddingSite, EmbeddingStore
from auditor.similarity.neighbours import cross_pairs, unit_rows
from auditor.similarity.settings import SimilaritySettings

__all__ = ["Leakage", "training_leakage"]


@dataclass(frozen=True)
class Leakage:
    """Training images against validation images.

    Attributes:
        source: The training set as given.
        images: Training images embedded.
        unreadable: Training images that could not be read.
        pairs: One row per (training image, validation image) pair at or above the
            duplicate similarity, or byte-identical: ``train_path, row, path, cosine,
            identical, same_patient`` (``row`` of ``predictions.csv``).
        shared_patients: Values of the patient column found in both sets.
        patient_column: The column compared, or ``None``.
    """

    source: Path
    images: int
    unreadable: int
    pairs: pd.DataFrame
    shared_patients: tuple[str, ...]
    patient_column: str | None
    seconds: float


def _embed(
    model: LoadedModel, dataset: Dataset, preprocessing: Preprocessing, site: EmbeddingSite,
    settings: SimilaritySettings,
) -> tuple[EmbeddingStore, list[int], list[str], int]:  # fmt: skip
    """The training images' embeddings, their sample indices and file hashes, and how
    many could not be read."""
    store = EmbeddingStore(len(dataset.samples))
    indices: list[int] = []
    hashes: list[str] = []
    unreadable = 0
    loader = make_loader(dataset.samples, preprocessing, settings.batch_size, settings.workers)
    with torch.inference_mode():
        for batch in tqdm(loader, desc="training set", unit="batch", leave=False, disable=None):
            unreadable += len(batch.failures)
            if not batch.images.numel():
                continue
            _, vectors = run_model(model, batch.images, site)
            assert vectors is not None, "a site gives vectors"
            store.add(vectors)
            indices.extend(batch.indices.tolist())
            hashes.extend(batch.hashes)
    return store, indices, hashes, unreadable


def training_leakage(
    model: LoadedModel, train: Dataset, preprocessing: Preprocessing, site: EmbeddingSite,
    validation: np.ndarray, predictions: pd.DataFrame, settings: SimilaritySettings,
    threshold: float,
) -> Leakage:  # fmt: skip
    """Compare the training set with the validation set's ``validation`` embeddings (one
    row per row of ``predictions``): pairs with cosine similarity at least ``threshold``
    (the validation set's near-duplicate threshold), or byte-identical."""
    started = time.perf_counter()
    store, indices, hashes, unreadable = _embed(model, train, preprocessing, site, settings)
    column = settings.patient_column
    patients = {i: dict(train.samples[i].metadata).get(column or "", "") for i in indices}
    rows: dict[tuple[int, int], float] = {}
    if store.rows:
        ours, theirs = unit_rows(validation), unit_rows(store.all())
        pairs, values, _, _ = cross_pairs(ours, theirs, threshold)
        rows = {(int(v), int(t)): float(c) for (v, t), c in zip(pairs, values, strict=True)}
        sha_rows = predictions.reset_index(drop=True).groupby("sha256").groups
        for t, sha in enumerate(hashes):
            for v in sha_rows.get(sha, []):
                rows.setdefault((int(v), t), float(ours[int(v)] @ theirs[t]))
    val_patients = (
        predictions[column].fillna("").astype(str).tolist() if column in predictions else []
    )
    frame = pd.DataFrame(
        [
            {
                "train_path": train.samples[indices[t]].relpath,
                "row": v,
                "path": predictions["path"].iloc[v],
                "cosine": c,
                "identical": hashes[t] == predictions["sha256"].iloc[v],
                "same_patient": bool(val_patients)
                and patients[indices[t]] != ""
                and patients[indices[t]] == val_patients[v],
            }
            for (v, t), c in sorted(rows.items())
        ],
        columns=["train_path", "row", "path", "cosine", "identical", "same_patient"],
    )
    shared = sorted((set(patients.values()) & set(val_patients)) - {""}) if column else []
    return Leakage(
        train.source, store.rows, unreadable, frame, tuple(shared), column,
        time.perf_counter() - started,
    )  # fmt: skip
