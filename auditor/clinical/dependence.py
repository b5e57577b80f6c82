"""Metadata dependence: does the prediction depend on a metadata column given the true label?

A model that reads the disease should call images positive at the same rate whatever
an unrelated value (a site, a marker drawn on the skin) is, among images of one true
class. For each metadata column and each true class, the share of images predicted
positive is computed per value of the column (Wilson 95% intervals). Each comparison (a
column at a true class with two values of at least ``min-group-size`` images) has for
statistic the largest difference between two of those values. The null is that the
prediction is independent of the column given the label: the calls are permuted within
each true class (one permutation shared by every column, seeded and vectorised). Each
comparison gets its permutation p-value and Westfall and Young's step-down min-P
adjusted p-value across every comparison, so a column the model depends on at two true
classes is named at both, while the chance of any false finding stays at most
``dependence-alpha``. The difference's 95% interval is Newcombe's hybrid score interval
(the images are the unit resampled, never maps). A comparison is a finding when its
adjusted p-value is at most ``dependence-alpha`` and its difference at least
``dependence-difference``.

statsmodels computes the intervals; the permutation test and the step-down are in
:mod:`auditor.clinical.permutation`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from statsmodels.stats.proportion import confint_proportions_2indep

from auditor.clinical.groups import Grouping
from auditor.clinical.permutation import Stratum, permuted_statistics, step_down_min_p, strata_of
from auditor.clinical.rates import rates, resampled_ratios
from auditor.clinical.settings import ClinicalSettings
from auditor.errors import ConfigError
from auditor.resample import Resampling

__all__ = [
    "ColumnDependence",
    "Dependence",
    "GroupRate",
    "having",
    "is_finding",
    "metadata_dependence",
    "positive_class",
    "target_dependence",
]


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
        target: The class whose calls are counted (the positive class; a multi-label
            model's label).
        label: The images' true class (a multi-label model's: ``with <label>`` or
            ``without <label>``).
        judged: Whether the group has at least ``min-group-size`` images.
    """

    column: str
    target: str
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
    """One column's largest difference in the positive rate at one true class (a
    comparison).

    A column has one per true class with two values of enough images. When no true class
    has, it has one whose ``label``, ``high`` and ``low`` are ``None`` (and the numbers
    NaN); ``reason`` then says so.

    Attributes:
        target: The class whose calls are compared (as :attr:`GroupRate.target`).
        label: The true class compared at (as :attr:`GroupRate.label`).
        high: The value with the highest positive rate at ``label``.
        low: The value with the lowest.
        difference: ``rate(high) - rate(low)``, with its Newcombe 95% interval.
        p_value: Permutation p-value of the difference.
        p_adjusted: Step-down min-P adjusted across every comparison of its target
            (times the targets compared, Bonferroni, when there are several).
        finding: Whether the dependence is significant and large.
    """

    column: str
    target: str
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
        positive_class: The class a positive prediction means; ``None`` for a
            multi-label model, whose every label is a target of its own.
        rates: Every (column, target, true class, value) group.
        columns: Each column broken down, at each true class compared (in the data's
            column order, then the classes'), or once with the reason it was not (a
            multi-label model's: per label, in label order, then per column).
        binned: Columns of numbers binned into quartiles.
        skipped: ``(column, reason)`` for columns not broken down.
        targets: Targets with a comparison: the Bonferroni factor across them (for a
            single-label model, 1, or 0 when nothing was compared).
    """

    settings: ClinicalSettings
    positive_class: str | None
    rates: tuple[GroupRate, ...]
    columns: tuple[ColumnDependence, ...]
    binned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    targets: int

    def findings(self) -> tuple[ColumnDependence, ...]:
        """The comparisons found, largest difference first."""
        return tuple(sorted((c for c in self.columns if c.finding), key=lambda c: -c.difference))

    def found_columns(self) -> dict[str, tuple[ColumnDependence, ...]]:
        """The columns the prediction depends on, each with its findings (one per target
        and true class), the largest difference first."""
        found: dict[str, tuple[ColumnDependence, ...]] = {}
        for c in self.findings():
            found[c.column] = (*found.get(c.column, ()), c)
        return found

    @property
    def n_compared(self) -> int:
        """Comparisons made (columns at a true class with two values large enough)."""
        return sum(c.label is not None for c in self.columns)

    @property
    def multi_label(self) -> bool:
        return self.positive_class is None

    @property
    def p_floor(self) -> float:
        """The smallest adjusted p-value the permutations can give: one in
        ``permutations + 1`` (the data counted as one), times the targets compared."""
        return self.targets / (self.settings.permutations + 1)

    @property
    def judged(self) -> bool:
        """Whether a finding was possible: a comparison was made, and the permutations
        can reach ``dependence-alpha``."""
        return self.n_compared > 0 and self.p_floor <= self.settings.dependence_alpha

    def images(self, label: str) -> str:
        """The images of true class ``label`` in words: "benign images", "images with
        effusion"."""
        return f"images {label}" if self.multi_label else f"{label} images"

    def has_target(self, c: ColumnDependence) -> bool:
        """Whether ``c`` compares images that are of its target (a sensitivity), not
        images that are not (a specificity)."""
        return c.label == (having(c.target, True) if self.multi_label else c.target)

    def rate(self, column: str, label: str, value: str) -> GroupRate:
        """The group of ``value`` of ``column`` among images of true class ``label``."""
        return next(r for r in self.rates if (r.column, r.label, r.value) == (column, label, value))


def having(label: str, has: bool) -> str:
    """A multi-label model's true class at one of its labels: ``with <label>`` or
    ``without <label>``."""
    return f"{'with' if has else 'without'} {label}"


def is_finding(row: ColumnDependence, settings: ClinicalSettings) -> bool:
    """Whether a comparison's adjusted p-value and difference make it a finding."""
    return bool(
        row.p_adjusted <= settings.dependence_alpha
        and row.difference >= settings.dependence_difference
    )


def _members(
    values: pd.Series, labels: pd.Series, pairs: list[tuple[str, str]]
) -> NDArray[np.bool_]:
    """``(N, len(pairs))``: whether each image is of each ``(label, value)`` group."""
    return np.stack([((labels == a) & (values == b)).to_numpy() for a, b in pairs], axis=1)


def _rates(
    column: str, target: str, values: pd.Series, labels: pd.Series, called: NDArray[np.bool_],
    settings: ClinicalSettings, resampling: tuple[Resampling, int], stream: list[int],
) -> list[GroupRate]:  # fmt: skip
    """Every (label, value) group's positive rate: Wilson intervals, or bootstrap ones
    over ``resampling``'s groups."""
    table = pd.DataFrame({"label": labels, "value": values, "called": called})
    counts = table.groupby(["label", "value"], sort=True)["called"].agg(["count", "sum"])
    pairs = [(str(a), str(b)) for a, b in counts.index]
    of = _members(values, labels, pairs)
    hits = np.repeat(called[:, None], len(pairs), axis=1)
    intervals = rates(hits, of, *resampling, [*stream, 2])
    least = settings.min_group_size
    groups = zip(pairs, intervals, strict=True)
    return [
        GroupRate(column, target, a, b, r.n, r.hits, r.value, r.ci_low, r.ci_high, r.n >= least)
        for (a, b), r in groups
    ]


def _compared(
    stratum: Stratum, group_rates: list[GroupRate], values: pd.Series, labels: pd.Series,
    called: NDArray[np.bool_], resampling: tuple[Resampling, int], rng: np.random.Generator,
) -> ColumnDependence:  # fmt: skip
    """The stratum's highest and lowest judged groups and their difference's interval
    (Newcombe's over images, or the percentile bootstrap over ``resampling``'s groups)."""
    judged = [r for r in group_rates if r.label == stratum.label and r.judged]
    high = max(judged, key=lambda r: (r.rate, r.value))
    low = min(judged, key=lambda r: (r.rate, r.value))
    ci = _difference_interval(values, labels, called, high, low, resampling, rng)
    nan = float("nan")
    return ColumnDependence(
        stratum.column, high.target, stratum.label, high.value, low.value,
        high.rate - low.rate, float(ci[0]), float(ci[1]), nan, nan, False, "",
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


def _too_few(column: str, target: str, settings: ClinicalSettings) -> ColumnDependence:
    reason = (
        f"no true class has two values with at least {settings.min_group_size} images "
        f"(min-group-size); too few to judge"
    )
    nan = float("nan")
    return ColumnDependence(
        column, target, None, None, None, nan, nan, nan, nan, nan, False, reason
    )


def _tested(
    rows: list[ColumnDependence], strata: list[Stratum], called: NDArray[np.bool_],
    settings: ClinicalSettings, rng: np.random.Generator,
) -> list[ColumnDependence]:  # fmt: skip
    """``rows`` with each comparison's permutation p-value, its step-down min-P adjusted
    p-value across every comparison, and whether it is a finding (:func:`is_finding`)."""
    if not strata:
        return rows
    observed = np.array([s.statistic(called[s.inside][None, :])[0] for s in strata])
    raw, adjusted = step_down_min_p(
        observed, permuted_statistics(strata, called, settings.permutations, rng)
    )
    tested: dict[tuple[str, str | None], tuple[float, float]] = {
        (s.column, s.label): (float(p), float(a))
        for s, p, a in zip(strata, raw, adjusted, strict=True)
    }
    result = []
    for row in rows:
        if (row.column, row.label) in tested:
            p, p_adjusted = tested[(row.column, row.label)]
            row = replace(row, p_value=p, p_adjusted=p_adjusted)
            row = replace(row, finding=is_finding(row, settings))
        result.append(row)
    return result


def target_dependence(
    target: str, labels: pd.Series, called: NDArray[np.bool_], grouping: Grouping,
    settings: ClinicalSettings, resampling: tuple[Resampling, int], stream: list[int],
) -> tuple[list[GroupRate], list[ColumnDependence]]:  # fmt: skip
    """Every group's rate of calls of ``target``, and every column's comparisons, their
    p-values adjusted across the comparisons made here.

    Args:
        target: The class whose calls ``called`` are.
        labels: Each image's true class, as the strata are named.
        called: Whether each image was called ``target``.
        resampling: What the intervals resample, and how many times.
        stream: The first entropy words of every random stream drawn here (``[seed]``;
            ``[seed, k]`` for a multi-label model's label ``k``).
    """
    rates: list[GroupRate] = []
    rows: list[ColumnDependence] = []
    strata: list[Stratum] = []
    for index, (column, values) in enumerate(grouping.groups.items()):
        column_rates = _rates(column, target, values, labels, called, settings, resampling, stream)
        column_strata = strata_of(column, values, labels, settings.min_group_size)
        rng = np.random.default_rng([*stream, index])
        rows.extend(
            _compared(s, column_rates, values, labels, called, resampling, rng)
            for s in column_strata
        )
        if not column_strata:
            rows.append(_too_few(column, target, settings))
        rates.extend(column_rates)
        strata.extend(column_strata)
    # The permutations' stream follows the columns' interval streams ([*stream, index]).
    rng = np.random.default_rng([*stream, len(grouping.groups)])
    return rates, _tested(rows, strata, called, settings, rng)


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
    rates, columns = target_dependence(
        positive, labels, called, grouping, settings, (resampling, resamples), [settings.seed]
    )
    return Dependence(
        settings=settings,
        positive_class=positive,
        rates=tuple(rates),
        columns=tuple(columns),
        binned=grouping.binned,
        skipped=grouping.skipped,
        targets=int(any(c.label is not None for c in columns)),
    )
