"""The similarity stage: projections of the embedding, what organises it, each explained
case's nearest neighbours, near-duplicates and (with a training set) possible leakage.

Everything is computed from the embeddings the evaluation pass kept
(:mod:`auditor.similarity.embeddings`); only a declared training set is run through
the model again, for its embeddings alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from statsmodels.stats.multitest import multipletests

from auditor.clinical.groups import Grouping
from auditor.data import Dataset
from auditor.evaluate import Evaluation
from auditor.images import Preprocessing
from auditor.load import LoadedModel
from auditor.select import Selection
from auditor.similarity.embeddings import EmbeddingSite
from auditor.similarity.leakage import Leakage, training_leakage
from auditor.similarity.neighbours import Neighbours, nearest, pairs_within, unit_rows
from auditor.similarity.projection import (
    Agreement,
    Projection,
    agreement,
    pca,
    stratified_sample,
    tsne,
    umap_projection,
)
from auditor.similarity.settings import SimilaritySettings

__all__ = ["ALPHA", "Duplicates", "Similarity", "analyse_similarity", "duplicate_threshold"]

ALPHA = 0.05
"""Holm-adjusted p-value below which a variable organises the embedding (a finding)."""


@dataclass(frozen=True)
class Similarity:
    """What the embedding shows.

    Attributes:
        site: Where the embedding was read.
        dimensions: Its length.
        projections: PCA, then t-SNE (when it ran).
        agreements: Class, correct, then each metadata column.
        holm: The metadata columns' Holm-adjusted p-values (over the columns only; class
            and correct are described, not findings: errors gather near any model's
            boundary).
        neighbours: Every image's nearest others and the near-duplicate pairs (rows of
            ``predictions.csv``).
        cases: The explained cases' rows of ``predictions.csv``.
        duplicates: Pairs of rows that are near-duplicates or byte-identical.
        leakage: Training images against validation images, when a training set was given.
        stratum: What the first variable is and the others are permuted within: the
            class, or a multi-label model's set of labels (the ``label`` cell).
        alone: Images alone in their stratum: the permutations cannot move their
            values, so they add the same to the observed and the permuted share.
    """

    site: EmbeddingSite
    dimensions: int
    projections: tuple[Projection, ...]
    agreements: tuple[Agreement, ...]
    holm: tuple[float, ...]
    neighbours: Neighbours
    cases: tuple[int, ...]
    duplicates: Duplicates
    leakage: Leakage | None
    seconds: float
    settings: SimilaritySettings
    stratum: str = "class"
    alone: int = 0

    @property
    def columns(self) -> tuple[Agreement, ...]:
        """The metadata columns' agreements (after class and correct)."""
        return self.agreements[2:]

    def organised_by(self) -> tuple[tuple[Agreement, float], ...]:
        """The metadata columns that organise the embedding beyond the stratum, with their
        Holm-adjusted p-values: below :data:`ALPHA`, and above chance."""
        return tuple(
            (a, p)
            for a, p in zip(self.columns, self.holm, strict=True)
            if p < ALPHA and a.observed > a.expected
        )


@dataclass(frozen=True)
class Duplicates:
    """Pairs of validation images (rows of ``predictions.csv``, ``i < j``) whose
    embeddings are near-duplicates (cosine similarity at least ``threshold``), or whose
    files are byte-identical (the same SHA-256).

    Attributes:
        threshold: ``1 - duplicate-distance × the median cosine distance from an image to
            its nearest neighbour``.
        rows: ``(P, 2)``, sorted.
        cosine: ``(P,)`` their embeddings' cosine similarity.
        identical: ``(P,)`` whether the files are byte-identical.
        same_label: ``(P,)`` whether the two images have the same label.
    """

    threshold: float
    rows: np.ndarray
    cosine: np.ndarray
    identical: np.ndarray
    same_label: np.ndarray


def duplicate_threshold(neighbours: Neighbours, share: float) -> float:
    """The cosine similarity from which two images are near-duplicates: their distance is
    at most ``share`` of the median distance from an image to its nearest neighbour;
    ``inf`` (none is) when that median is 0: the embedding does not tell most images
    from their neighbours (a one-dimensional one, for instance), so only byte-identical
    files are listed."""
    median = float(np.median(1 - neighbours.similarity[:, 0].astype(np.float64)))
    return 1 - share * median if median > 0 else math.inf


def _duplicates(predictions: pd.DataFrame, vectors: torch.Tensor, threshold: float) -> Duplicates:
    found = {(int(a), int(b)) for a, b in pairs_within(vectors, threshold)[0]}
    identical: set[tuple[int, int]] = set()
    for rows in predictions.reset_index(drop=True).groupby("sha256", sort=False).groups.values():
        members = sorted(int(r) for r in rows)
        identical.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    pairs = np.array(sorted(found | identical), dtype=np.int64).reshape(-1, 2)
    cosine = (vectors[pairs[:, 0]] * vectors[pairs[:, 1]]).sum(1).numpy()
    labels = predictions["label"].to_numpy()
    same_file = np.array([tuple(p) in identical for p in pairs.tolist()], dtype=bool)
    same_label = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    return Duplicates(threshold, pairs, cosine, same_file, same_label)


def _agreements(
    predictions: pd.DataFrame,
    grouping: Grouping,
    neighbours: Neighbours,
    settings: SimilaritySettings,
    stratum: str,
) -> tuple[tuple[Agreement, ...], tuple[float, ...]]:
    """The ``stratum`` (the class, or a multi-label model's set of labels; values
    permuted freely), then correct and each metadata column (permuted within each
    stratum), with the metadata columns' Holm-adjusted p-values."""
    index = neighbours.index[:, : settings.agreement_neighbours]
    labels = pd.factorize(predictions["label"])[0].astype(np.int64)
    seed, runs = settings.seed, settings.agreement_permutations
    correct = predictions["correct"].map({True: "correct", False: "error"})
    found = [
        agreement(stratum, predictions["label"], index, None, runs, seed),
        agreement("correct", correct, index, labels, runs, seed + 1),
    ]
    for offset, (name, values) in enumerate(grouping.groups.items(), start=2):
        if values.nunique() > 1:
            found.append(
                agreement(name, values.reset_index(drop=True), index, labels, runs, seed + offset)
            )
    tested = [a.p_value for a in found[2:]]
    holm = tuple(float(p) for p in multipletests(tested, method="holm")[1]) if tested else ()
    return tuple(found), holm


def analyse_similarity(
    model: LoadedModel, preprocessing: Preprocessing, evaluation: Evaluation,
    site: EmbeddingSite | None, train: Dataset | None, grouping: Grouping,
    selection: Selection, settings: SimilaritySettings,
) -> Similarity | None:  # fmt: skip
    """The embedding's projections, agreements, neighbours and duplicates, and with a
    ``train`` set its leakage; ``None`` when no embedding was kept (the model's output is
    not made by a linear layer and no ``embedding-layer`` was declared). A multi-label
    model's images are grouped by their set of labels where a single-label model's are
    by their class."""
    store = evaluation.embeddings
    if site is None or store is None or store.rows < 3:
        return None
    started = time.perf_counter()
    predictions = evaluation.predictions
    vectors = unit_rows(store.all())
    k = max(settings.neighbours, settings.agreement_neighbours)
    neighbours = nearest(vectors, k)
    threshold = duplicate_threshold(neighbours, settings.duplicate_distance)
    leakage = None
    if train is not None:
        leakage = training_leakage(
            model, train, preprocessing, site, store.all(), predictions, settings, threshold
        )
    labels = pd.factorize(predictions["label"])[0].astype(np.int64)
    all_rows = np.arange(store.rows)
    projections = [pca(vectors.numpy(), all_rows, settings.seed)]
    if settings.tsne_points:
        rows = stratified_sample(labels, settings.tsne_points, settings.seed)
        chosen = vectors.numpy()[rows]
        projections.append(tsne(chosen, rows, settings.tsne_perplexity, settings.seed))
        if (found := umap_projection(chosen, rows, settings.seed)) is not None:
            projections.append(found)
    stratum = "class" if evaluation.label_metrics is None else "set of labels"
    agreements, holm = _agreements(predictions, grouping, neighbours, settings, stratum)
    row_of = {int(index): row for row, index in enumerate(predictions["index"].tolist())}
    explained = dict.fromkeys((*selection.misclassified, *selection.sampled))  # once each
    cases = tuple(row_of[i] for i in explained if i in row_of)
    duplicates = _duplicates(predictions, vectors, threshold)
    return Similarity(
        site, store.dimensions, tuple(projections), agreements, holm, neighbours, cases,
        duplicates, leakage, time.perf_counter() - started, settings, stratum,
        int((np.bincount(labels) == 1).sum()),
    )  # fmt: skip
