"""Whether the inputs, the predictions and the explanations moved between two audits.

- Inputs: each image's per-channel pixel mean and standard deviation (recorded by the
  evaluation), compared with two-sample Kolmogorov–Smirnov tests, Holm-adjusted over
  the statistics; and the embedding's distribution, by the maximum mean discrepancy
  (MMD, Gretton et al., 2012) with a Gaussian kernel on the unit-normalised embeddings
  (bandwidth: the median pairwise distance) and a permutation p-value. The MMD is
  computed only when both embeddings come from the same model file: two models'
  embeddings live in different spaces.
- Predictions: the predicted classes' distribution (chi-squared test of homogeneity) and
  the confidence's (Kolmogorov–Smirnov). A multi-label model's calls are no one class
  per image: each label's share of images called (Fisher's exact test) and its
  probability's distribution (Kolmogorov–Smirnov), each Holm-adjusted over the labels.
  When the audits are paired on the same images, the tests are the paired ones, which
  count only what changed image by image (and find a shift the two-sample tests miss:
  they take the two audits for independent samples): the classes by McNemar's exact
  test when the changed calls involve two classes, else the Stuart–Maxwell test of
  marginal homogeneity; a label's calls by McNemar's exact test; the confidence and a
  label's probability by the Wilcoxon signed-rank test of the images' differences
  (those of at most :data:`UNCHANGED` left out).
- Explanations: for an image explained for the same class in both audits, the Spearman
  rank correlation of a method's two maps.

The MMD is written here: the two-sample test is twenty lines of numpy on a kernel matrix,
and the libraries that ship one (alibi-detect, torchdrift) bring a deep-learning stack of
their own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import (
    binomtest,
    chi2,
    chi2_contingency,
    fisher_exact,
    ks_2samp,
    spearmanr,
    wilcoxon,
)
from skimage.transform import resize
from statsmodels.stats.multitest import multipletests

__all__ = [
    "UNCHANGED",
    "Shift",
    "explanation_drift",
    "intensity_drift",
    "label_prediction_drift",
    "mmd_test",
    "prediction_drift",
]


_KOLMOGOROV_SMIRNOV = "Kolmogorov–Smirnov"
_SAME = "on the same images"

UNCHANGED = 1e-3
"""An image's probability (or confidence) that moved by at most this between two paired
audits counts as unchanged: re-running one model on other hardware moves its
probabilities by rounding alone (another thread count, a GPU's TF32 convolutions), and
a signed-rank test on thousands of images would call that drift."""


@dataclass(frozen=True)
class Shift:
    """One tested quantity: before and after (means), the test's statistic and p-value
    (Holm-adjusted where several are tested together), whether it moved, and the test
    in words (as a sentence names it: "({test}, p = ...)")."""

    name: str
    before: float
    after: float
    statistic: float
    p_value: float
    moved: bool
    test: str


def _two_sample(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """The two-sample Kolmogorov–Smirnov test: its statistic and p-value (where the exact
    p-value cannot be computed, scipy's asymptotic one, without its warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Exact calculation unsuccessful", RuntimeWarning)
        found = ks_2samp(before, after)
    return float(found.statistic), float(found.pvalue)


def intensity_drift(old: pd.DataFrame, new: pd.DataFrame, alpha: float) -> list[Shift]:
    """Each intensity statistic (the columns both frames share but ``index``), by a
    Kolmogorov–Smirnov test, Holm-adjusted over the statistics."""
    columns = [c for c in old.columns if c in new.columns and c != "index"]
    tests = [_two_sample(old[c].to_numpy(), new[c].to_numpy()) for c in columns]
    adjusted = multipletests([t[1] for t in tests], method="holm")[1] if tests else []
    test = f"{_KOLMOGOROV_SMIRNOV}, Holm-adjusted over the statistics"
    return [
        Shift(c, float(old[c].mean()), float(new[c].mean()), t[0], float(p), bool(p < alpha),
              test)
        for c, t, p in zip(columns, tests, adjusted, strict=True)
    ]  # fmt: skip


def _sample(rows: np.ndarray, most: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= most:
        return rows
    return rows[np.sort(rng.choice(len(rows), most, replace=False))]


def _mmd(kernel: np.ndarray, first: np.ndarray) -> float:
    """Unbiased MMD² of the rows marked ``first`` against the others, from the kernel."""
    second = ~first
    k_xx = kernel[np.ix_(first, first)]
    k_yy = kernel[np.ix_(second, second)]
    n, m = int(first.sum()), int(second.sum())
    xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(xx + yy - 2 * kernel[np.ix_(first, second)].mean())


def mmd_test(
    old: np.ndarray, new: np.ndarray, permutations: int, most: int, alpha: float, seed: int
) -> Shift:
    """The embeddings' maximum mean discrepancy and its permutation p-value, on at most
    ``most`` seeded rows of each (``before``/``after``: each side's mean distance to the
    pooled centre)."""
    rng = np.random.default_rng(seed)
    x, y = _sample(old, most, rng), _sample(new, most, rng)
    pooled = np.concatenate([x, y]).astype(np.float64)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    squared = np.maximum(
        (pooled**2).sum(1)[:, None] + (pooled**2).sum(1)[None, :] - 2 * pooled @ pooled.T, 0
    )
    upper = squared[np.triu_indices(len(pooled), 1)]
    bandwidth = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-squared / bandwidth)
    first = np.arange(len(pooled)) < len(x)
    observed = _mmd(kernel, first)
    exceed = sum(_mmd(kernel, rng.permutation(first)) >= observed for _ in range(permutations))
    p = (1 + exceed) / (1 + permutations)
    centre = pooled.mean(0)
    spread = np.linalg.norm(pooled - centre, axis=1)
    return Shift("embedding", float(spread[first].mean()), float(spread[~first].mean()),
                 observed, p, p < alpha, "maximum mean discrepancy, permutation test")  # fmt: skip


def _mcnemar(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """McNemar's exact test of one call on the same images (``(N,)`` bool each): the
    images newly called less those no longer called, and the two-sided binomial p-value
    of the images whose call changed."""
    gained, lost = int((~before & after).sum()), int((before & ~after).sum())
    p = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
    return float(gained - lost), float(p)


def _stuart_maxwell(table: np.ndarray) -> tuple[float, float]:
    """Stuart–Maxwell's test of marginal homogeneity of a square table of the two audits'
    calls (Stuart, 1955; Maxwell, 1970): ``d' V⁺ d`` for the margins' differences ``d``
    and their covariance ``V``, on as many degrees of freedom as ``V``'s rank. The
    generalised inverse over every class, rather than the textbook's inverse with one
    class left out, keeps the test defined when a class is called alike by both audits
    (its row of ``V`` is zero) or the changes fall into separate groups of classes;
    statsmodels' ``SquareTable.homogeneity`` returns NaN there."""
    d = table.sum(1) - table.sum(0)
    covariance = -(table + table.T)
    np.fill_diagonal(covariance, table.sum(1) + table.sum(0) - 2 * np.diag(table))
    statistic = float(d @ np.linalg.pinv(covariance) @ d)
    return statistic, float(chi2.sf(statistic, np.linalg.matrix_rank(covariance)))


def _classes_paired(before: np.ndarray, after: np.ndarray, moved: int) -> tuple[float, float, str]:
    """The predicted classes' shares on the same images (class codes, row by row): when
    the changed calls involve two classes, McNemar's exact test on the class ``moved``
    (statistic: the images newly called it less those no longer called it); with more,
    the Stuart–Maxwell test of marginal homogeneity (its chi-squared statistic)."""
    changed = before != after
    involved = np.unique(np.concatenate([before[changed], after[changed]]))
    if len(involved) <= 2:
        return (*_mcnemar(before == moved, after == moved), f"McNemar's exact test {_SAME}")
    codes = np.searchsorted(involved, np.stack([before[changed], after[changed]]))
    table = np.zeros((len(involved), len(involved)))
    np.add.at(table, (codes[0], codes[1]), 1)  # the unchanged calls do not enter the test
    return (*_stuart_maxwell(table), f"Stuart–Maxwell test {_SAME}")


def _signed_rank(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """The Wilcoxon signed-rank test of the differences ``after - before``, on the images
    whose value changed by more than :data:`UNCHANGED` (so that a few changes get the
    exact test); none changed: statistic 0, p 1."""
    differences = after - before
    differences = differences[np.abs(differences) > UNCHANGED]
    if not len(differences):
        return 0.0, 1.0
    found = wilcoxon(differences)
    return float(found.statistic), float(found.pvalue)


def prediction_drift(
    old: pd.DataFrame, new: pd.DataFrame, classes: tuple[str, ...], alpha: float,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Shift]:  # fmt: skip
    """The predicted classes (``before``/``after``: the share called the class whose
    share changed most, named in ``name``) and the confidence (its means): the
    chi-squared test of homogeneity and Kolmogorov–Smirnov; with ``pairs`` (the rows of
    each audit that hold the same images), on those images, by the paired tests
    (McNemar's or Stuart–Maxwell's, and Wilcoxon's signed-rank)."""
    if pairs is not None:
        old, new = old.iloc[pairs[0]], new.iloc[pairs[1]]
    index = {c: k for k, c in enumerate(classes)}
    codes = [f["prediction"].astype(str).map(index).to_numpy(np.int64) for f in (old, new)]
    counts = np.array([np.bincount(c, minlength=len(classes)) for c in codes])
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    moved = int(np.argmax(np.abs(shares[1] - shares[0])))
    confidences = old["confidence"].to_numpy(), new["confidence"].to_numpy()
    if pairs is not None:
        statistic, p, test = _classes_paired(codes[0], codes[1], moved)
        confidence, p_confidence = _signed_rank(*confidences)
        confidence_test = f"Wilcoxon signed-rank test {_SAME}"
    else:
        kept = counts[:, counts.sum(0) > 0]
        chi = chi2_contingency(kept) if kept.shape[1] > 1 else None
        statistic, p = (float(chi.statistic), float(chi.pvalue)) if chi else (0.0, 1.0)
        test, confidence_test = "chi-squared", _KOLMOGOROV_SMIRNOV
        confidence, p_confidence = _two_sample(*confidences)
    return [
        Shift(f"share called {classes[moved]}", float(shares[0, moved]),
              float(shares[1, moved]), statistic, p, p < alpha, test),
        Shift("confidence", float(confidences[0].mean()), float(confidences[1].mean()),
              confidence, p_confidence, p_confidence < alpha, confidence_test),
    ]  # fmt: skip


def _most_moved(names: list[str], raw: list[float], changes: list[float]) -> tuple[int, float]:
    """The test with the smallest Holm-adjusted p-value (ties: the largest change), and
    that p-value."""
    adjusted = multipletests(raw, method="holm")[1]
    best = min(range(len(names)), key=lambda k: (adjusted[k], -abs(changes[k])))
    return best, float(adjusted[best])


def _call_tests(
    before: np.ndarray, after: np.ndarray, paired: bool
) -> tuple[list[float], list[float]]:
    """Each label's statistic and p-value for a change in its share called: Fisher's
    exact test (its odds ratio), or with ``paired`` rows McNemar's exact test (the images
    newly called less those no longer called)."""
    if paired:
        found = [_mcnemar(before[:, k], after[:, k]) for k in range(before.shape[1])]
    else:
        tables = [[[int(c[:, k].sum()), int((~c[:, k]).sum())] for c in (before, after)]
                  for k in range(before.shape[1])]  # fmt: skip
        found = [(float(f.statistic), float(f.pvalue)) for f in map(fisher_exact, tables)]
    return [f[0] for f in found], [f[1] for f in found]


def _score_tests(
    before: np.ndarray, after: np.ndarray, paired: bool
) -> tuple[list[float], list[float]]:
    """Each label's statistic and p-value for a change in its probability's
    distribution: Kolmogorov–Smirnov, or with ``paired`` rows Wilcoxon's signed-rank test
    of the images' differences."""
    if paired:
        found = [_signed_rank(before[:, k], after[:, k]) for k in range(before.shape[1])]
    else:
        found = [_two_sample(before[:, k], after[:, k]) for k in range(before.shape[1])]
    return [f[0] for f in found], [f[1] for f in found]


def label_prediction_drift(
    old: tuple[np.ndarray, pd.DataFrame],
    new: tuple[np.ndarray, pd.DataFrame],
    classes: tuple[str, ...],
    alpha: float,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Shift]:
    """A multi-label model's calls and probabilities, each audit given as its ``(N, K)``
    calls and its predictions table: each label's share of images called (Fisher's exact
    test on the 2 x 2 table of called and not called in each audit) and its probability
    ``p_<label>`` (Kolmogorov–Smirnov); with ``pairs`` (the rows of each audit that hold
    the same images), on those images, by McNemar's exact test and Wilcoxon's
    signed-rank test. Each is Holm-adjusted over the labels and reported by its label
    with the smallest adjusted p-value (``before``/``after``: the share called, the mean
    probability)."""
    before, after = old[0], new[0]
    columns = [f"p_{c}" for c in classes]
    scores = old[1][columns].to_numpy(np.float64), new[1][columns].to_numpy(np.float64)
    if pairs is not None:
        before, after = before[pairs[0]], after[pairs[1]]
        scores = scores[0][pairs[0]], scores[1][pairs[1]]
    paired = pairs is not None
    shares = [before.mean(axis=0), after.mean(axis=0)]
    statistics, p_values = _call_tests(before, after, paired)
    called, p_called = _most_moved(list(classes), p_values, list(shares[1] - shares[0]))
    means = scores[0].mean(axis=0), scores[1].mean(axis=0)
    score_statistics, score_p = _score_tests(*scores, paired)
    scored, p_scored = _most_moved(list(classes), score_p, list(means[1] - means[0]))
    holm = "Holm-adjusted over the labels"
    tests = (f"McNemar's exact test {_SAME}", f"Wilcoxon signed-rank test {_SAME}") if paired \
        else ("Fisher's exact test", _KOLMOGOROV_SMIRNOV)  # fmt: skip
    return [
        Shift(f"share called {classes[called]}", float(shares[0][called]),
              float(shares[1][called]), statistics[called], p_called, p_called < alpha,
              f"{tests[0]}, {holm}"),
        Shift(f"probability of {classes[scored]}", float(means[0][scored]),
              float(means[1][scored]), score_statistics[scored], p_scored, p_scored < alpha,
              f"{tests[1]}, {holm}"),
    ]  # fmt: skip


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        b = resize(b, a.shape, order=1, anti_aliasing=False, preserve_range=True)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def explanation_drift(
    old: dict[tuple[str, str, str], np.ndarray],
    new: dict[tuple[str, str, str], np.ndarray],
    methods: tuple[str, ...],
) -> pd.DataFrame:
    """For each method, the rank correlation of its two maps of every image explained for
    the same class in both audits (maps keyed ``(image SHA-256, class, method)``): one
    row per method with ``images``, ``median``, ``low`` and ``high`` (the quartiles)."""
    rows = []
    for method in methods:
        shared = sorted(k for k in old.keys() & new.keys() if k[2] == method)
        values = np.array([_correlation(old[k], new[k]) for k in shared], dtype=np.float64)
        values = values[np.isfinite(values)]
        quartiles = np.percentile(values, [25, 50, 75]) if values.size else [np.nan] * 3
        rows.append(
            {"method": method, "images": int(values.size), "median": float(quartiles[1]),
             "low": float(quartiles[0]), "high": float(quartiles[2])}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "images", "median", "low", "high"])
