"""Subgroups and fairness: the test's rates per metadata value, and their disparities.

For each metadata column (grouped by :func:`~auditor.clinical.groups.metadata_groups`:
numbers binned into quartiles, a column of too many values listed as skipped) and each
of its values: images, prevalence, sensitivity, specificity, PPV, NPV and accuracy,
counted with fairlearn's ``MetricFrame`` and given Wilson 95% intervals. Across the
values with at least ``min-group-size`` images (smaller ones are shown as too few to
judge and left out of every disparity): fairlearn's demographic-parity difference and
ratio, equalized-odds difference and the equal-opportunity difference (the
true-positive rates' difference), each with a percentile bootstrap interval over
images (a largest-minus-smallest gap is biased upward by sampling noise, so near zero
its interval can lie above the estimate: it says how large the gap could be; whether
a gap is real is the metadata-dependence test's question). fairlearn would be called
once per resample, so the bootstrap is vectorised here (resample counts as weights,
group rates by ``bincount``); a test checks that the point estimates equal fairlearn's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    true_positive_rate,
)
from numpy.typing import NDArray

from auditor.clinical.groups import Grouping
from auditor.clinical.operating import Rate, wilson_rate
from auditor.clinical.settings import ClinicalSettings

__all__ = ["DISPARITIES", "Disparity", "Fairness", "GroupMetrics", "fairness"]

DISPARITIES = (
    "demographic parity difference",
    "demographic parity ratio",
    "equalized odds difference",
    "equal opportunity difference",
)

_CHUNK = 200


@dataclass(frozen=True)
class GroupMetrics:
    """The test's rates among the images of one value of one column.

    Attributes:
        too_few: Fewer than ``min-group-size`` images: shown, not compared.
    """

    column: str
    value: str
    n: int
    too_few: bool
    prevalence: Rate
    sensitivity: Rate
    specificity: Rate
    ppv: Rate
    npv: Rate
    accuracy: Rate


@dataclass(frozen=True)
class Disparity:
    """One fairness metric of one column across its groups large enough to compare."""

    column: str
    metric: str
    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Fairness:
    """Per-group rates and the disparities of every metadata column.

    Attributes:
        lowest: ``(column, measure) → value`` of the judged group with the lowest
            sensitivity and the lowest specificity.
    """

    positive_class: str
    groups: tuple[GroupMetrics, ...]
    disparities: tuple[Disparity, ...]
    lowest: dict[tuple[str, str], str]
    binned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    min_group_size: int
    resamples: int


def _counts(y: NDArray[np.bool_], called: NDArray[np.bool_], values: pd.Series) -> pd.DataFrame:
    """True/false positives and negatives per value, through fairlearn's MetricFrame."""
    frame = MetricFrame(
        metrics={
            "tp": lambda t, p: int((t & p).sum()),
            "fp": lambda t, p: int((~t & p).sum()),
            "tn": lambda t, p: int((~t & ~p).sum()),
            "fn": lambda t, p: int((t & ~p).sum()),
        },
        y_true=y,
        y_pred=called,
        sensitive_features=values.to_numpy(),
    )
    return frame.by_group.astype(int)


def _group_metrics(column: str, counts: pd.DataFrame, minimum: int) -> list[GroupMetrics]:
    rows = []
    for value, c in counts.iterrows():
        n = int(c.tp + c.fp + c.tn + c.fn)
        rows.append(
            GroupMetrics(
                column=column,
                value=str(value),
                n=n,
                too_few=n < minimum,
                prevalence=wilson_rate(int(c.tp + c.fn), n),
                sensitivity=wilson_rate(int(c.tp), int(c.tp + c.fn)),
                specificity=wilson_rate(int(c.tn), int(c.tn + c.fp)),
                ppv=wilson_rate(int(c.tp), int(c.tp + c.fp)),
                npv=wilson_rate(int(c.tn), int(c.tn + c.fn)),
                accuracy=wilson_rate(int(c.tp + c.tn), n),
            )
        )
    return rows


def _spread(rates: NDArray[np.float64]) -> NDArray[np.float64]:
    """Largest minus smallest finite rate of each row (NaN with fewer than two)."""
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(rates)
        high = np.where(finite, rates, -np.inf).max(axis=1)
        low = np.where(finite, rates, np.inf).min(axis=1)
        return np.where(finite.sum(axis=1) >= 2, high - low, np.nan)


def _resampled(
    codes: NDArray[np.int64], y: NDArray[np.bool_], called: NDArray[np.bool_],
    weights: NDArray[np.float64],
) -> NDArray[np.float64]:  # fmt: skip
    """``(R, 4)``: the four disparities of each resample (order of :data:`DISPARITIES`)."""
    rows, groups = weights.shape[0], int(codes.max()) + 1
    flat = (codes[None, :] + (np.arange(rows) * groups)[:, None]).ravel()

    def total(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        summed = np.bincount(flat, (weights * mask).ravel(), rows * groups)
        return np.asarray(summed, dtype=np.float64).reshape(rows, groups)

    n, selected = total(np.ones_like(y)), total(called)
    positives, negatives = total(y), total(~y)
    with np.errstate(invalid="ignore", divide="ignore"):
        selection = np.where(n > 0, selected / n, np.nan)
        tpr = np.where(positives > 0, total(y & called) / positives, np.nan)
        fpr = np.where(negatives > 0, total(~y & called) / negatives, np.nan)
        ratio = np.nanmin(selection, axis=1) / np.nanmax(selection, axis=1)
    opportunity = _spread(tpr)
    return np.stack(
        [_spread(selection), ratio, np.fmax(opportunity, _spread(fpr)), opportunity], axis=1
    )


def _disparities(
    column: str, values: pd.Series, y: NDArray[np.bool_], called: NDArray[np.bool_],
    resamples: int, rng: np.random.Generator,
) -> list[Disparity]:  # fmt: skip
    features = values.to_numpy()
    tpr = MetricFrame(
        metrics=true_positive_rate, y_true=y, y_pred=called, sensitive_features=features
    )
    point = (
        demographic_parity_difference(y, called, sensitive_features=features),
        demographic_parity_ratio(y, called, sensitive_features=features),
        equalized_odds_difference(y, called, sensitive_features=features),
        tpr.difference(),
    )
    codes, _ = pd.factorize(values, sort=True)
    draws = []
    for start in range(0, resamples, _CHUNK):
        rows = min(_CHUNK, resamples - start)
        weights = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=rows)
        draws.append(_resampled(codes.astype(np.int64), y, called, weights.astype(np.float64)))
    low, high = np.nanquantile(np.concatenate(draws), [0.025, 0.975], axis=0)
    return [
        Disparity(column, metric, float(value), float(lo), float(hi))
        for metric, value, lo, hi in zip(DISPARITIES, point, low, high, strict=True)
    ]


def _lowest(rows: list[GroupMetrics], measure: str) -> str | None:
    """The judged group with the lowest ``measure`` (ties by value), if any has one."""
    ranked = [
        (getattr(r, measure).value, r.value)
        for r in rows
        if not r.too_few and np.isfinite(getattr(r, measure).value)
    ]
    return min(ranked)[1] if ranked else None


def fairness(
    predictions: pd.DataFrame,
    grouping: Grouping,
    positive_class: str,
    settings: ClinicalSettings,
    resamples: int,
) -> Fairness | None:
    """Per-group rates and disparities, or ``None`` without metadata columns."""
    if grouping.empty:
        return None
    y = (predictions["label"] == positive_class).to_numpy(dtype=bool)
    called = (predictions["prediction"] == positive_class).to_numpy(dtype=bool)
    groups: list[GroupMetrics] = []
    disparities: list[Disparity] = []
    lowest: dict[tuple[str, str], str] = {}
    for index, (column, values) in enumerate(grouping.groups.items()):
        rows = _group_metrics(column, _counts(y, called, values), settings.min_group_size)
        groups.extend(rows)
        judged = [r.value for r in rows if not r.too_few]
        if len(judged) < 2:
            continue
        keep = values.isin(judged).to_numpy()
        rng = np.random.default_rng([settings.seed, index])
        disparities.extend(
            _disparities(column, values[keep], y[keep], called[keep], resamples, rng)
        )
        for measure in ("sensitivity", "specificity"):
            worst = _lowest(rows, measure)
            if worst is not None:
                lowest[(column, measure)] = worst
    return Fairness(
        positive_class, tuple(groups), tuple(disparities), lowest, grouping.binned,
        grouping.skipped, settings.min_group_size, resamples,
    )  # fmt: skip
