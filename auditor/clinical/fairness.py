"""Subgroups and fairness: the test's rates per metadata value, and their disparities.

For each metadata column (grouped by :func:`~auditor.clinical.groups.metadata_groups`:
numbers binned into quartiles, a column of too many values listed as skipped) and each
of its values: images, prevalence, sensitivity, specificity, PPV, NPV and accuracy,
counted with fairlearn's ``MetricFrame`` and given Wilson 95% intervals (bootstrap
intervals over patients when a ``patient-column`` is declared). Across the
values with at least ``min-group-size`` images (smaller ones are shown as too few to
judge and left out of every disparity): fairlearn's demographic-parity difference and
ratio, equalized-odds difference and the equal-opportunity difference (the
true-positive rates' difference), each with a percentile bootstrap interval over
images or patients (a largest-minus-smallest gap is biased upward by sampling noise, so near zero
its interval can lie above the estimate: it says how large the gap could be; whether
a gap is real is the metadata-dependence test's question). fairlearn would be called
once per resample, so the point estimates and the bootstrap are computed here (resample
counts as weights, group rates by ``bincount``); a test checks that they equal
fairlearn's where every group has images with the class and without it. Where a group
has none with it (or none without), its true-positive (or false-positive) rate is
undefined and left out of that gap, not counted as 0 as fairlearn counts it (a false
gap as large as the other groups' rate); a gap needs two groups that have the rate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from numpy.typing import NDArray

from auditor.clinical.calibration import ece_interval
from auditor.clinical.groups import Grouping
from auditor.clinical.operating import auc_interval
from auditor.clinical.rates import Rate, rates, wilson_rate
from auditor.clinical.settings import ClinicalSettings
from auditor.metrics import Estimate
from auditor.resample import Resampling, grouped_sums

__all__ = [
    "DISPARITIES",
    "WORST",
    "BinaryTest",
    "Disparity",
    "Fairness",
    "GroupMetrics",
    "fairness",
    "fairness_of",
]

DISPARITIES = (
    "demographic parity difference",
    "demographic parity ratio",
    "equalized odds difference",
    "equal opportunity difference",
)


@dataclass(frozen=True)
class GroupMetrics:
    """The test's rates among the images of one value of one column.

    Attributes:
        too_few: Fewer than ``min-group-size`` images: shown, not compared.
        auc: ROC AUC of the positive class's probability among the group's images, with
            its bootstrap 95% interval (``None`` when too few or lacking a class).
        ece: The expected calibration error of that probability, likewise.
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
    auc: Estimate | None = None
    ece: Estimate | None = None


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
        lowest: ``(column, measure) → value`` of the judged group worst on each measure
            of :data:`WORST` (the lowest rate or AUC, the highest ECE).
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


_MEASURES = ("prevalence", "sensitivity", "specificity", "ppv", "npv", "accuracy")


def _group_metrics(
    column: str, counts: pd.DataFrame, minimum: int, intervals: list[Rate] | None
) -> list[GroupMetrics]:
    """One row per value from its counts; ``intervals`` (six per value, in the order of
    :data:`_MEASURES`), when given, are the rates with bootstrap intervals over patients."""
    rows = []
    for position, (value, c) in enumerate(counts.iterrows()):
        n = int(c.tp + c.fp + c.tn + c.fn)
        wilson = (
            wilson_rate(int(c.tp + c.fn), n),
            wilson_rate(int(c.tp), int(c.tp + c.fn)),
            wilson_rate(int(c.tn), int(c.tn + c.fp)),
            wilson_rate(int(c.tp), int(c.tp + c.fp)),
            wilson_rate(int(c.tn), int(c.tn + c.fn)),
            wilson_rate(int(c.tp + c.tn), n),
        )
        measured = wilson if intervals is None else intervals[6 * position : 6 * position + 6]
        rows.append(GroupMetrics(column, str(value), n, n < minimum, *measured))
    return rows


def _clustered(
    order: pd.Index, values: pd.Series, y: NDArray[np.bool_], called: NDArray[np.bool_],
    resampling: Resampling, resamples: int, seed: list[int],
) -> list[Rate] | None:  # fmt: skip
    """The six rates of every value (in ``order``) with bootstrap intervals over
    ``resampling``'s groups; ``None`` when images are resampled."""
    if resampling.codes is None:
        return None
    hits, of = [], []
    for value in order:
        member = (values == value).to_numpy()
        correct = y == called
        hits += [y, called, ~called, y, ~y, correct]
        of += [member, member & y, member & ~y, member & called, member & ~called, member]
    return rates(np.stack(hits, axis=1), np.stack(of, axis=1), resampling, resamples, seed)


def _spread(shares: NDArray[np.float64]) -> NDArray[np.float64]:
    """Largest minus smallest finite rate of each row (NaN with fewer than two)."""
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(shares)
        high = np.where(finite, shares, -np.inf).max(axis=1)
        low = np.where(finite, shares, np.inf).min(axis=1)
        return np.where(finite.sum(axis=1) >= 2, high - low, np.nan)


def _resampled(
    codes: NDArray[np.int64], y: NDArray[np.bool_], called: NDArray[np.bool_],
    weights: NDArray[np.float64],
) -> NDArray[np.float64]:  # fmt: skip
    """``(R, 4)``: the four disparities of each resample (order of :data:`DISPARITIES`)."""
    groups = int(codes.max()) + 1

    def total(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        return grouped_sums(codes, weights * mask, groups)

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
    resamples: int, rng: np.random.Generator, resampling: Resampling,
) -> list[Disparity]:  # fmt: skip
    codes = pd.factorize(values, sort=True)[0].astype(np.int64)
    point = _resampled(codes, y, called, np.ones((1, len(y))))[0]
    draws = [_resampled(codes, y, called, w) for w in resampling.chunks(len(y), resamples, rng)]
    with warnings.catch_warnings():  # a gap no resample measures: NaN, said as such
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(np.concatenate(draws), [0.025, 0.975], axis=0)
    return [
        Disparity(column, metric, float(value), float(lo), float(hi))
        for metric, value, lo, hi in zip(DISPARITIES, point, low, high, strict=True)
    ]


def _scored(
    rows: list[GroupMetrics], values: pd.Series, scores: NDArray[np.float64],
    y: NDArray[np.bool_], drawing: tuple[Resampling, int, list[int]],
) -> list[GroupMetrics]:  # fmt: skip
    """The rows with the AUC and ECE of each group large enough to judge (``drawing``:
    what a resample draws, how many, and the seed)."""
    resampling, resamples, seed = drawing
    rng = np.random.default_rng(seed)
    scored = []
    for row in rows:
        if row.too_few:
            scored.append(row)
            continue
        member = (values == row.value).to_numpy()
        within = resampling.subset(member)
        auc = auc_interval(scores[member], y[member], within, resamples, rng)
        ece = ece_interval(scores[member], y[member], within, resamples, rng)
        scored.append(replace(row, auc=Estimate(*auc) if auc else None, ece=Estimate(*ece)))
    return scored


WORST = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "auc", "ece")
"""The measures whose worst judged group is named: the lowest, but the highest ECE."""


def _worst(rows: list[GroupMetrics], measure: str) -> str | None:
    """The judged group worst on ``measure`` (ties by value), if any has one."""
    # ECE is pushed up by noise on few images: rank it by its interval's lower end, so
    # the smallest group is not named for its noise.
    part, sign = ("ci_low", -1.0) if measure == "ece" else ("value", 1.0)
    ranked = [
        (sign * getattr(getattr(r, measure), part), r.value)
        for r in rows
        if not r.too_few
        and getattr(r, measure) is not None
        and np.isfinite(getattr(getattr(r, measure), part))
    ]
    return min(ranked)[1] if ranked else None


def fairness(
    predictions: pd.DataFrame,
    grouping: Grouping,
    positive_class: str,
    settings: ClinicalSettings,
    resamples: int,
    resampling: Resampling | None = None,
    threshold: float = 0.5,
) -> Fairness | None:
    """Per-group rates and disparities, or ``None`` without metadata columns.

    Args:
        threshold: An image is called positive when the positive class's probability is
            at least this (the operating point's threshold).
        resampling: What a bootstrap resample draws (images by default); with groups,
            the per-value rates get bootstrap intervals over them, not Wilson's.
    """
    if grouping.empty:
        return None
    y = (predictions["label"] == positive_class).to_numpy(dtype=bool)
    scores = predictions[f"p_{positive_class}"].to_numpy(dtype=np.float64)
    test = BinaryTest(positive_class, y, scores, scores >= threshold)
    return fairness_of(test, grouping, settings, resamples, resampling or Resampling())


@dataclass(frozen=True)
class BinaryTest:
    """A binary test of every image: its target's name, whether each image has it, the
    score and the call (``stream``: where its random draws start, after the seed)."""

    name: str
    y: NDArray[np.bool_]
    scores: NDArray[np.float64]
    called: NDArray[np.bool_]
    stream: tuple[int, ...] = ()


def fairness_of(
    test: BinaryTest, grouping: Grouping, settings: ClinicalSettings, resamples: int,
    resampling: Resampling,
) -> Fairness:  # fmt: skip
    """:func:`fairness` of any binary ``test`` (a multi-label model's label, too)."""
    y, scores, called = test.y, test.scores, test.called
    groups: list[GroupMetrics] = []
    disparities: list[Disparity] = []
    lowest: dict[tuple[str, str], str] = {}
    for index, (column, values) in enumerate(grouping.groups.items()):
        seed = [settings.seed, *test.stream, index]
        counts = _counts(y, called, values)
        clustered = _clustered(counts.index, values, y, called, resampling, resamples, [*seed, 1])
        rows = _scored(
            _group_metrics(column, counts, settings.min_group_size, clustered),
            values, scores, y, (resampling, resamples, [*seed, 2]),
        )  # fmt: skip
        groups.extend(rows)
        judged = [r.value for r in rows if not r.too_few]
        if len(judged) < 2:
            continue
        keep = values.isin(judged).to_numpy()
        rng = np.random.default_rng(seed)
        found = _disparities(
            column, values[keep], y[keep], called[keep], resamples, rng, resampling.subset(keep)
        )
        disparities.extend(found)
        for measure in WORST:
            worst = _worst(rows, measure)
            if worst is not None:
                lowest[(column, measure)] = worst
    return Fairness(
        test.name, tuple(groups), tuple(disparities), lowest, grouping.binned,
        grouping.skipped, settings.min_group_size, resamples,
    )  # fmt: skip
