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
  per image: each label's share of images called (Fisher's exact test; McNemar's exact
  test when the audits are paired on the same images, which counts only the images whose
  call of the label changed) and its probability's distribution (Kolmogorov–Smirnov),
  each Holm-adjusted over the labels.
- Explanations: for an image explained for the same class in both audits, the Spearman
  rank correlation of a method's two maps.

The MMD is written here: the two-sample test is twenty lines of numpy on a kernel matrix,
and the libraries that ship one (alibi-detect, torchdrift) bring a deep-learning stack of
their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2_contingency, fisher_exact, ks_2samp, spearmanr
from skimage.transform import resize
from statsmodels.stats.multitest import multipletests

__all__ = [
    "Shift",
    "call_test",
    "explanation_drift",
    "intensity_drift",
    "label_prediction_drift",
    "mmd_test",
    "prediction_drift",
]


@dataclass(frozen=True)
class Shift:
    """One tested quantity: before and after (means), the test's statistic and p-value
    (Holm-adjusted where several are tested together), and whether it moved."""

    name: str
    before: float
    after: float
    statistic: float
    p_value: float
    moved: bool


def intensity_drift(old: pd.DataFrame, new: pd.DataFrame, alpha: float) -> list[Shift]:
    """Each intensity statistic (the columns both frames share but ``index``), by a
    Kolmogorov–Smirnov test, Holm-adjusted over the statistics."""
    columns = [c for c in old.columns if c in new.columns and c != "index"]
    tests = [ks_2samp(old[c].to_numpy(), new[c].to_numpy()) for c in columns]
    raw = [float(t.pvalue) for t in tests]
    adjusted = multipletests(raw, method="holm")[1] if raw else []
    return [
        Shift(c, float(old[c].mean()), float(new[c].mean()), float(t.statistic), float(p),
              bool(p < alpha))
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
                 observed, p, p < alpha)  # fmt: skip


def prediction_drift(
    old: pd.DataFrame, new: pd.DataFrame, classes: tuple[str, ...], alpha: float
) -> list[Shift]:
    """The predicted classes (chi-squared; ``before``/``after``: the share called the class
    whose share changed most, named in ``name``) and the confidence (Kolmogorov–Smirnov)."""
    counts = np.array(
        [[int((frame["prediction"] == c).sum()) for c in classes] for frame in (old, new)]
    )
    kept = counts[:, counts.sum(0) > 0]
    if kept.shape[1] > 1:
        chi = chi2_contingency(kept)
        statistic, p = float(chi.statistic), float(chi.pvalue)
    else:
        statistic, p = 0.0, 1.0
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    moved = int(np.argmax(np.abs(shares[1] - shares[0])))
    confidence = ks_2samp(old["confidence"].to_numpy(), new["confidence"].to_numpy())
    return [
        Shift(f"share called {classes[moved]}", float(shares[0, moved]),
              float(shares[1, moved]), statistic, p, p < alpha),
        Shift("confidence", float(old["confidence"].mean()), float(new["confidence"].mean()),
              float(confidence.statistic), float(confidence.pvalue),
              bool(confidence.pvalue < alpha)),
    ]  # fmt: skip


def _most_moved(names: list[str], raw: list[float], changes: list[float]) -> tuple[int, float]:
    """The test with the smallest Holm-adjusted p-value (ties: the largest change), and
    that p-value."""
    adjusted = multipletests(raw, method="holm")[1]
    best = min(range(len(names)), key=lambda k: (adjusted[k], -abs(changes[k])))
    return best, float(adjusted[best])


def call_test(paired: bool) -> str:
    """The test of a multi-label model's labels' shares called, in words."""
    return "McNemar's exact test on the same images" if paired else "Fisher's exact test"


def _call_tests(
    before: np.ndarray, after: np.ndarray, paired: bool
) -> tuple[list[float], list[float]]:
    """Each label's statistic and p-value for a change in its share called: Fisher's
    exact test (its odds ratio), or with ``paired`` rows McNemar's exact test (the images
    newly called less those no longer called)."""
    statistics, p_values = [], []
    for k in range(before.shape[1]):
        if paired:
            gained = int((~before[:, k] & after[:, k]).sum())
            lost = int((before[:, k] & ~after[:, k]).sum())
            statistics.append(float(gained - lost))
            p_values.append(binomtest(gained, gained + lost).pvalue if gained + lost else 1.0)
            continue
        table = [[int(c[:, k].sum()), int((~c[:, k]).sum())] for c in (before, after)]
        found = fisher_exact(table)
        statistics.append(float(found.statistic))
        p_values.append(float(found.pvalue))
    return statistics, p_values


def label_prediction_drift(
    old: tuple[np.ndarray, pd.DataFrame],
    new: tuple[np.ndarray, pd.DataFrame],
    classes: tuple[str, ...],
    alpha: float,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Shift]:
    """A multi-label model's calls and probabilities, each audit given as its ``(N, K)``
    calls and its predictions table: each label's share of images called (Fisher's exact
    test on the 2 x 2 table of called and not called in each audit; with ``pairs``, the
    rows of each audit that hold the same images, McNemar's exact test on those images)
    and its probability ``p_<label>`` (Kolmogorov–Smirnov), Holm-adjusted over the labels;
    each reported by its label with the smallest adjusted p-value (``before``/``after``:
    the share called, over the paired images when paired; the mean probability)."""
    before, after = old[0], new[0]
    if pairs is not None:
        before, after = before[pairs[0]], after[pairs[1]]
    shares = [before.mean(axis=0), after.mean(axis=0)]
    statistics, p_values = _call_tests(before, after, pairs is not None)
    called, p_called = _most_moved(list(classes), p_values, list(shares[1] - shares[0]))
    columns = [(old[1][f"p_{c}"].to_numpy(), new[1][f"p_{c}"].to_numpy()) for c in classes]
    tests = [ks_2samp(b, a) for b, a in columns]
    means = [(float(b.mean()), float(a.mean())) for b, a in columns]
    scored, p_scored = _most_moved(
        list(classes), [float(t.pvalue) for t in tests], [a - b for b, a in means]
    )
    return [
        Shift(f"share called {classes[called]}", float(shares[0][called]),
              float(shares[1][called]), statistics[called], p_called, p_called < alpha),
        Shift(f"probability of {classes[scored]}", *means[scored],
              float(tests[scored].statistic), p_scored, p_scored < alpha),
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
