"""Metadata dependence: does the prediction depend on a metadata column given the true label?

A model that reads the disease should call images positive at the same rate whatever
an unrelated value (a site, a marker drawn on the skin) is, among images of one true
class. For each metadata column and each true class, the share of images predicted
positive is computed per value of the column (Wilson 95% intervals); the column's
statistic is the largest difference between two of its values, at one true class,
among groups of at least ``min-group-size`` images. Its p-value comes from permuting the
column's values within each true class (the null: prediction independent of the column
given the label), seeded and vectorised; the p-values are Holm-adjusted across the
columns judged. The difference's 95% interval is Newcombe's hybrid score interval (the
images are the unit resampled, never maps). A column is a finding when its adjusted
p-value is at most ``dependence-alpha`` and its difference at least
``dependence-difference``.

statsmodels computes the intervals and the Holm adjustment; the permutation test is
written here (it needs the maximum over labels and value pairs, which no library's
permutation test batches this way).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep

from auditor.clinical.groups import Grouping
from auditor.clinical.rates import rates, resampled_ratios
from auditor.clinical.settings import ClinicalSettings
from auditor.errors import ConfigError
from auditor.resample import Resampling, grouped_sums

__all__ = [
    "ColumnDependence",
    "Dependence",
    "GroupRate",
    "metadata_dependence",
    "positive_class",
]

_CHUNK = 256
"""Permutations drawn at a time (memory: ``_CHUNK`` x images indices)."""


def positive_class(classes: tuple[str, ...], settings: ClinicalSettings) -> str | None:
    """The declared positive class, else the second of two classes, else ``None``.

    Raises:
        ConfigError: The declared class is not one of ``classes``, or both threshold
            targets are set.
    """
    if settings.target_sensitivity is not None and settings.target_specificity is not None:
        raise ConfigError(
            "target-sensitivity and target-specificity are both set; keep one (a threshold "
            "is chosen for one target)"
        )
    if settings.positive_class is None:
        return classes[1] if len(classes) == 2 else None
    if settings.positive_class not in classes:
        raise ConfigError(
            f"positive-class {settings.positive_class!r} is not one of the model's classes "
            f"({', '.join(classes)}); pass one of them"
        )
    return settings.positive_class


@dataclass(frozen=True)
class GroupRate:
    """Images of one true class with one value of a column, and how many were called positive.

    Attributes:
        judged: Whether the group has at least ``min-group-size`` images.
    """

    column: str
    label: str
    value: str
    n: int
    positive: int
    rate: float
    ci_low: float
    ci_high: float
    judged: bool


@dataclass(frozen=True)
class ColumnDependence:
    """One column's largest difference in the positive rate at one true class.

    ``label``, ``high`` and ``low`` are ``None`` (and the numbers NaN) when no true class
    has two values with enough images; ``reason`` then says so.

    Attributes:
        high: The value with the highest positive rate at ``label``.
        low: The value with the lowest.
        difference: ``rate(high) - rate(low)``, with its Newcombe 95% interval.
        p_value: Permutation p-value of the column's statistic.
        p_adjusted: Holm-adjusted across the columns judged.
        finding: Whether the dependence is significant and large.
    """

    column: str
    label: str | None
    high: str | None
    low: str | None
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    finding: bool
    reason: str


@dataclass(frozen=True)
class Dependence:
    """Metadata dependence of every metadata column.

    Attributes:
        positive_class: The class a positive prediction means.
        rates: Every (column, true class, value) group.
        columns: Each column broken down, in the data's column order.
        binned: Columns of numbers binned into quartiles.
        skipped: ``(column, reason)`` for columns not broken down.
    """

    settings: ClinicalSettings
    positive_class: str
    rates: tuple[GroupRate, ...]
    columns: tuple[ColumnDependence, ...]
    binned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]

    def findings(self) -> tuple[ColumnDependence, ...]:
        """The columns the prediction depends on, largest difference first."""
        return tuple(sorted((c for c in self.columns if c.finding), key=lambda c: -c.difference))

    def rate(self, column: str, label: str, value: str) -> GroupRate:
        """The group of ``value`` of ``column`` among images of true class ``label``."""
        return next(r for r in self.rates if (r.column, r.label, r.value) == (column, label, value))


def _members(
    values: pd.Series, labels: pd.Series, pairs: list[tuple[str, str]]
) -> NDArray[np.bool_]:
    """``(N, len(pairs))``: whether each image is of each ``(label, value)`` group."""
    return np.stack([((labels == a) & (values == b)).to_numpy() for a, b in pairs], axis=1)


def _rates(
    column: str, values: pd.Series, labels: pd.Series, called: NDArray[np.bool_],
    settings: ClinicalSettings, resampling: Resampling, resamples: int,
) -> list[GroupRate]:  # fmt: skip
    """Every (label, value) group's positive rate: Wilson intervals, or bootstrap ones
    over ``resampling``'s groups."""
    table = pd.DataFrame({"label": labels, "value": values, "called": called})
    counts = table.groupby(["label", "value"], sort=True)["called"].agg(["count", "sum"])
    pairs = [(str(a), str(b)) for a, b in counts.index]
    of = _members(values, labels, pairs)
    hits = np.repeat(called[:, None], len(pairs), axis=1)
    intervals = rates(hits, of, resampling, resamples, [settings.seed, 2])
    rows = []
    for (label, value), rate in zip(pairs, intervals, strict=True):
        n, positive = rate.n, rate.hits
        rows.append(
            GroupRate(
                column,
                str(label),
                str(value),
                n,
                positive,
                rate.value,
                rate.ci_low,
                rate.ci_high,
                n >= settings.min_group_size,
            )
        )
    return rows


def _statistic(
    codes: NDArray[np.int64], called: NDArray[np.bool_], eligible: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Largest minus smallest positive rate over eligible groups, per row of ``codes``.

    ``codes`` is ``(R, n)``: each row assigns the stratum's ``n`` images to groups.
    """
    groups = eligible.shape[0]
    ones = np.ones(codes.shape, dtype=np.float64)
    sizes = grouped_sums(codes, ones, groups)
    rates = grouped_sums(codes, ones * called, groups) / np.maximum(sizes, 1)
    return np.asarray(rates[:, eligible].max(axis=1) - rates[:, eligible].min(axis=1))


def _p_value(
    strata: list[tuple[NDArray[np.int64], NDArray[np.bool_], NDArray[np.bool_]]],
    permutations: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """The observed statistic (max over strata) and its permutation p-value."""
    observed = max(float(_statistic(c[None, :], y, e)[0]) for c, y, e in strata)
    exceed = 0
    for start in range(0, permutations, _CHUNK):
        rows = min(_CHUNK, permutations - start)
        permuted = np.zeros(rows)
        for codes, called, eligible in strata:
            shuffled = rng.permuted(np.tile(codes, (rows, 1)), axis=1)
            permuted = np.maximum(permuted, _statistic(shuffled, called, eligible))
        exceed += int((permuted >= observed - 1e-12).sum())
    return observed, (1 + exceed) / (1 + permutations)


def _strata(
    values: pd.Series, labels: pd.Series, called: NDArray[np.bool_], minimum: int
) -> list[tuple[str, NDArray[np.int64], NDArray[np.bool_], NDArray[np.bool_]]]:
    """Per true class with two groups of ``minimum`` images: group codes, calls, eligibility."""
    strata = []
    for label in sorted(labels.unique()):
        inside = (labels == label).to_numpy()
        codes, _ = pd.factorize(values[inside], sort=True)
        sizes = np.bincount(codes)
        eligible = sizes >= minimum
        if eligible.sum() >= 2:
            strata.append((str(label), codes.astype(np.int64), called[inside], eligible))
    return strata


def _column(
    column: str,
    values: pd.Series,
    labels: pd.Series,
    called: NDArray[np.bool_],
    group_rates: list[GroupRate],
    settings: ClinicalSettings,
    rng: np.random.Generator,
    resampling: tuple[Resampling, int],
) -> ColumnDependence:
    """One column's statistic, p-value and the difference's interval (Newcombe's over
    images, or the percentile bootstrap over ``resampling``'s groups, with its count of
    resamples)."""
    strata = _strata(values, labels, called, settings.min_group_size)
    if not strata:
        reason = (
            f"no true class has two values with at least {settings.min_group_size} images "
            f"(min-group-size); too few to judge"
        )
        nan = float("nan")
        return ColumnDependence(column, None, None, None, nan, nan, nan, nan, nan, False, reason)
    _, p_value = _p_value([s[1:] for s in strata], settings.permutations, rng)
    best: tuple[float, GroupRate, GroupRate] | None = None
    for label, *_ in strata:
        judged = [r for r in group_rates if r.label == label and r.judged]
        high = max(judged, key=lambda r: (r.rate, r.value))
        low = min(judged, key=lambda r: (r.rate, r.value))
        if best is None or high.rate - low.rate > best[0]:
            best = (high.rate - low.rate, high, low)
    assert best is not None
    difference, high, low = best
    ci = _difference_interval(values, labels, called, high, low, resampling, rng)
    return ColumnDependence(
        column, high.label, high.value, low.value, difference, float(ci[0]), float(ci[1]),
        p_value, p_value, False, "",
    )  # fmt: skip


def _difference_interval(
    values: pd.Series, labels: pd.Series, called: NDArray[np.bool_], high: GroupRate,
    low: GroupRate, resampling: tuple[Resampling, int], rng: np.random.Generator,
) -> tuple[float, float]:  # fmt: skip
    """95% interval of ``high.rate - low.rate``."""
    grouping, resamples = resampling
    if grouping.codes is None:
        ci = confint_proportions_2indep(
            high.positive, high.n, low.positive, low.n, method="newcomb", compare="diff"
        )
        return float(ci[0]), float(ci[1])
    of = _members(values, labels, [(high.label, high.value), (low.label, low.value)])
    drawn = resampled_ratios(np.repeat(called[:, None], 2, axis=1), of, grouping, resamples, rng)
    difference = drawn[:, 0] - drawn[:, 1]
    ci = np.quantile(difference[np.isfinite(difference)], [0.025, 0.975])
    return float(ci[0]), float(ci[1])


def _adjusted(
    columns: list[ColumnDependence], settings: ClinicalSettings
) -> list[ColumnDependence]:
    judged = [i for i, c in enumerate(columns) if c.label is not None]
    if not judged:
        return columns
    adjusted = multipletests([columns[i].p_value for i in judged], method="holm")[1]
    result = list(columns)
    for i, p in zip(judged, adjusted, strict=True):
        c = columns[i]
        finding = p <= settings.dependence_alpha and c.difference >= settings.dependence_difference
        result[i] = replace(c, p_adjusted=float(p), finding=bool(finding))
    return result


def metadata_dependence(
    predictions: pd.DataFrame,
    grouping: Grouping,
    classes: tuple[str, ...],
    settings: ClinicalSettings,
    resampling: Resampling | None = None,
    resamples: int = 1000,
    threshold: float = 0.5,
) -> Dependence | None:
    """Each metadata column's dependence, or ``None`` without a positive class or columns.

    Args:
        predictions: ``predictions.csv``'s frame: ``label``, ``prediction``, the columns.
        grouping: The images grouped by each metadata column (:func:`metadata_groups`).
        classes: The model's classes.
        settings: Group sizes, thresholds, permutations and seed.
        resampling: Images (default) or a patient column's groups: with groups, every
            rate's and difference's interval is a bootstrap over them (``resamples``).
        threshold: An image is called positive when the positive class's probability is
            at least this (the operating point's threshold).
    """
    resampling = resampling or Resampling()
    positive = positive_class(classes, settings)
    if positive is None or grouping.empty:
        return None
    labels = predictions["label"].astype(str).reset_index(drop=True)
    called = predictions[f"p_{positive}"].to_numpy(dtype=np.float64) >= threshold
    rates: list[GroupRate] = []
    results: list[ColumnDependence] = []
    for index, (column, values) in enumerate(grouping.groups.items()):
        column_rates = _rates(column, values, labels, called, settings, resampling, resamples)
        rng = np.random.default_rng([settings.seed, index])
        results.append(
            _column(
                column,
                values,
                labels,
                called,
                column_rates,
                settings,
                rng,
                (resampling, resamples),
            )
        )
        rates.extend(column_rates)
    return Dependence(
        settings=settings,
        positive_class=positive,
        rates=tuple(rates),
        columns=tuple(_adjusted(results, settings)),
        binned=grouping.binned,
        skipped=grouping.skipped,
    )
