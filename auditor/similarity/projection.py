"""Projections of the embedding (PCA, t-SNE) and how much each variable organises it.

PCA and t-SNE are scikit-learn's (``PCA``; ``TSNE`` on the cosine distance, initialised
by PCA, seeded). t-SNE runs on a seeded sample stratified by class when there are more
than ``tsne-points`` images; each projection's trustworthiness (Venna and Kaski, 2001;
scikit-learn's, ``k = 10``) says how well it keeps the embedding's neighbourhoods.

**Neighbour agreement**: the share of each image's ``k`` nearest neighbours (cosine, in
the embedding itself, not a projection) that share its value of a variable. Against
it, the same share with the variable's values permuted; for a metadata column the
values are permuted within each class, so the question is whether the embedding groups
images by the variable *beyond* what their class explains. The p-value is the share of
permutations reaching the observed agreement, ``(1 + hits) / (1 + permutations)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE, trustworthiness

__all__ = [
    "Agreement",
    "Projection",
    "agreement",
    "pca",
    "stratified_sample",
    "tsne",
    "umap_projection",
]

TRUST_NEIGHBOURS = 10
"""``k`` of the projections' trustworthiness."""

PERMUTATION_VALUES = 1 << 24
"""Most neighbour comparisons held at once by the permutations."""


@dataclass(frozen=True)
class Projection:
    """Points placed in two dimensions.

    Attributes:
        method: ``"PCA"`` or ``"t-SNE"``.
        rows: ``(n,)`` rows of the embedding (of ``predictions.csv``) placed.
        points: ``(n, 2)`` their places.
        explained: PCA's explained variance ratio of each component kept (``()`` for t-SNE).
        trustworthiness: Of the placement, ``k = 10`` (NaN with too few points).
        detail: How it ran, in words.
    """

    method: str
    rows: NDArray[np.int64]
    points: NDArray[np.float32]
    explained: tuple[float, ...]
    trustworthiness: float
    detail: str


def stratified_sample(labels: NDArray[np.int64], limit: int, seed: int) -> NDArray[np.int64]:
    """``limit`` rows (all when there are fewer), sorted, drawn at random within each
    class: each class keeps its share, at least one row, the places left over going to
    the largest remainders (ties at random). With as many classes as places (a
    multi-label model's sets of labels can be), a plain random sample."""
    n = len(labels)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    if len(values) >= limit:
        return np.sort(rng.choice(n, limit, replace=False))
    share = limit * counts / n
    quota = np.minimum(np.maximum(1, np.floor(share)).astype(np.int64), counts)
    tie = rng.random(len(values))
    while quota.sum() > limit:  # the ones given to small classes: taken from the largest
        k = int(np.lexsort((tie, -(quota - share)))[0])
        quota[k] -= 1
    for k in np.lexsort((tie, -(share - quota))):
        if quota.sum() == limit:
            break
        if quota[k] < counts[k]:
            quota[k] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == value), int(q), replace=False)
        for value, q in zip(values, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _trust(vectors: NDArray[np.float32], points: NDArray[np.float32]) -> float:
    if len(points) <= 2 * TRUST_NEIGHBOURS + 1:
        return float("nan")
    return float(trustworthiness(vectors, points, n_neighbors=TRUST_NEIGHBOURS, metric="cosine"))


def pca(vectors: NDArray[np.float32], rows: NDArray[np.int64], seed: int) -> Projection:
    """The first two principal components of ``vectors`` (the embedding's ``rows``); the
    explained variance of up to ten components is kept."""
    components = min(10, vectors.shape[1], len(vectors))
    fitted = PCA(n_components=components, random_state=seed).fit(vectors)
    points = fitted.transform(vectors)[:, :2].astype(np.float32)
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    explained = tuple(float(v) for v in fitted.explained_variance_ratio_)
    detail = f"scikit-learn PCA on {len(rows):,} images"
    return Projection("PCA", rows, points, explained, _trust(vectors, points), detail)


def tsne(
    vectors: NDArray[np.float32], rows: NDArray[np.int64], perplexity: float, seed: int
) -> Projection:
    """t-SNE of ``vectors`` (the embedding's ``rows``) on the cosine distance, initialised
    by PCA (randomly for a one-dimensional embedding); the perplexity is lowered to a
    third of the points when it must be."""
    used = min(perplexity, max(1.0, (len(vectors) - 1) / 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        placed = TSNE(
            n_components=2,
            perplexity=used,
            metric="cosine",
            random_state=seed,
            init="pca" if vectors.shape[1] >= 2 else "random",  # PCA needs two dimensions
        ).fit_transform(vectors.astype(np.float64))
    points = placed.astype(np.float32)
    detail = f"scikit-learn t-SNE on {len(rows):,} images, perplexity {used:g}, seed {seed}"
    return Projection("t-SNE", rows, points, (), _trust(vectors, points), detail)


def umap_projection(
    vectors: NDArray[np.float32], rows: NDArray[np.int64], seed: int
) -> Projection | None:
    """UMAP (McInnes, Healy and Melville, 2018; ``umap-learn``, the optional extra
    ``auditor[umap]``) of ``vectors`` on the cosine distance, seeded; ``None`` when
    ``umap-learn`` is not installed."""
    try:
        import umap  # an optional extra: auditor[umap]
    except ImportError:
        return None
    neighbours = max(2, min(15, len(vectors) - 1))
    placed = umap.UMAP(
        n_components=2, n_neighbors=neighbours, metric="cosine", random_state=seed
    ).fit_transform(vectors)
    points = np.asarray(placed, dtype=np.float32)
    detail = f"umap-learn UMAP on {len(rows):,} images, {neighbours} neighbours, seed {seed}"
    return Projection("UMAP", rows, points, (), _trust(vectors, points), detail)


@dataclass(frozen=True)
class Agreement:
    """How much one variable organises the embedding.

    Attributes:
        variable: ``"class"``, ``"correct"`` or a metadata column.
        values: Its distinct values.
        observed: Share of the ``k`` nearest neighbours sharing an image's value.
        expected: The mean of that share over the permutations.
        p_value: Share of permutations reaching ``observed``.
        within_class: Whether the permutations kept each image's class.
    """

    variable: str
    values: int
    observed: float
    expected: float
    p_value: float
    within_class: bool


def _shares(codes: NDArray[np.int64], index: NDArray[np.int64]) -> NDArray[np.float64]:
    """``(P,)`` the agreement of each row of ``codes`` ``(P, n)`` over the neighbours."""
    same = codes[:, index] == codes[:, :, None]
    return same.mean(axis=(1, 2))


def agreement(
    variable: str, values: pd.Series, index: NDArray[np.int64], strata: NDArray[np.int64] | None,
    permutations: int, seed: int,
) -> Agreement:  # fmt: skip
    """Neighbour agreement of ``values`` over the neighbour ``index`` ``(n, k)``, against
    ``permutations`` of the values (within each stratum when ``strata`` are given)."""
    codes = pd.factorize(values.astype("string").fillna(""), sort=True)[0].astype(np.int64)
    n = len(codes)
    observed = float(_shares(codes[None, :], index)[0])
    rng = np.random.default_rng(seed)
    groups = strata if strata is not None else np.zeros(n, dtype=np.int64)
    by_group = np.argsort(groups, kind="stable")
    step = max(1, PERMUTATION_VALUES // max(1, index.size))
    null: list[NDArray[np.float64]] = []
    for start in range(0, permutations, step):
        count = min(step, permutations - start)
        order = np.argsort(groups[by_group] * 2.0 + rng.random((count, n)), axis=1)
        permuted = np.empty((count, n), dtype=np.int64)
        permuted[:, by_group] = codes[by_group][order]
        null.append(_shares(permuted, index))
    shares = np.concatenate(null)
    p_value = (1 + int((shares >= observed - 1e-12).sum())) / (1 + permutations)
    return Agreement(
        variable, int(codes.max()) + 1 if n else 0, observed, float(shares.mean()), p_value,
        strata is not None,
    )  # fmt: skip
