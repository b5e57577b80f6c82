"""Metadata dependence: a planted dependence is found with the right column, a blind model
gives no finding over many seeds, and the numbers equal independent computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import permutation_test
from statsmodels.stats.proportion import proportion_confint

from auditor.aggregate.dependence import dependence_unfound
from auditor.clinical import ClinicalSettings, Dependence, positive_class
from auditor.clinical import metadata_dependence as dependence_of_groups
from auditor.clinical.groups import EMPTY, metadata_groups
from auditor.clinical.permutation import permuted_statistics, step_down_min_p, strata_of
from auditor.errors import ConfigError
from tests.helpers import probability

CLASSES = ("benign", "malignant")


def _predictions(seed: int, marker_effect: float, n: int = 600) -> pd.DataFrame:
    """Images with a site, an age and a marker; benign ones with the marker are called
    malignant ``marker_effect`` more often than those without."""
    rng = np.random.default_rng(seed)
    label = rng.choice(CLASSES, n)
    marker = rng.random(n) < 0.3
    called = rng.random(n) < np.where(label == "malignant", 0.85, 0.05 + marker_effect * marker)
    return pd.DataFrame(
        {
            "label": label,
            "prediction": np.where(called, "malignant", "benign"),
            "p_malignant": probability(called, rng),
            "site": rng.choice(["A", "B", "C"], n),
            "age": rng.integers(20, 86, n).astype(str),
            "marker": marker.astype(str),
        }
    )


COLUMNS = ("site", "age", "marker")


def metadata_dependence(
    predictions: pd.DataFrame,
    columns: tuple[str, ...],
    classes: tuple[str, ...],
    settings: ClinicalSettings,
) -> Dependence | None:
    """The dependence of ``columns``, grouped as the audit groups them."""
    grouping = metadata_groups(predictions, columns, settings.max_groups)
    return dependence_of_groups(predictions, grouping, classes, settings)


def test_a_planted_dependence_is_found_on_its_column_and_no_other() -> None:
    dependence = metadata_dependence(
        _predictions(0, marker_effect=0.4), COLUMNS, CLASSES, ClinicalSettings()
    )

    assert dependence is not None and dependence.positive_class == "malignant"
    [finding] = dependence.findings()
    assert (finding.column, finding.label, finding.high, finding.low) == (
        "marker", "benign", "True", "False",
    )  # fmt: skip
    assert finding.ci_low > 0 and finding.p_adjusted <= 0.05
    assert dependence.binned == ("age",)


def test_a_dependence_at_both_classes_is_found_at_each() -> None:
    # Benign images with the marker are called malignant 40 points more often, and
    # malignant ones without it are missed 35 points more often.
    rng = np.random.default_rng(4)
    predictions = _predictions(4, marker_effect=0.4)
    marker = predictions["marker"] == "True"
    malignant = predictions["label"] == "malignant"
    called = np.where(
        malignant,
        rng.random(len(predictions)) < np.where(marker, 0.95, 0.6),
        predictions["prediction"] == "malignant",
    )
    predictions["p_malignant"] = probability(called, rng)

    dependence = metadata_dependence(predictions, COLUMNS, CLASSES, ClinicalSettings())

    assert dependence is not None
    found = dependence.found_columns()
    assert list(found) == ["marker"]
    assert [(c.label, c.high, c.low) for c in found["marker"]] == [
        ("benign", "True", "False"), ("malignant", "True", "False"),
    ]  # fmt: skip
    assert dependence.n_compared == 2 * len(COLUMNS)


def _min_p_by_definition(observed: np.ndarray, permuted: np.ndarray) -> tuple[np.ndarray, ...]:
    """Westfall and Young's algorithm 2.8, one hypothesis and one permutation at a time,
    the data counted as one of the permutations."""
    every = np.vstack([observed, permuted])
    count, hypotheses = every.shape
    p = np.array([[(every[:, h] >= every[b, h]).sum() / count for h in range(hypotheses)]
                  for b in range(count)])  # fmt: skip
    raw = p[0]
    order = sorted(range(hypotheses), key=lambda h: raw[h])
    adjusted, running = np.empty(hypotheses), 0.0
    for j, h in enumerate(order):
        hits = sum(p[b, order[j:]].min() <= raw[h] for b in range(1, count))
        running = max(running, (1 + hits) / count)
        adjusted[h] = running
    return raw, adjusted


@pytest.mark.parametrize("grid", [False, True], ids=["continuous", "tied"])
def test_the_step_down_equals_its_definition_and_lies_between_raw_and_single_step(
    grid: bool,
) -> None:
    rng = np.random.default_rng(6)
    permuted = rng.random((300, 7)) * np.array([1, 1, 2, 1, 0.5, 1, 1])
    observed = np.array([0.97, 0.5, 1.9, 0.99, 0.2, 0.999, 0.3])
    if grid:  # statistics on a grid, as rates of small groups are: ties everywhere
        permuted, observed = np.round(permuted * 4) / 4, np.round(observed * 4) / 4

    raw, adjusted = step_down_min_p(observed, permuted)

    reference = _min_p_by_definition(observed, permuted)
    np.testing.assert_allclose(raw, reference[0])
    np.testing.assert_allclose(adjusted, reference[1])
    p = np.vstack([observed, permuted])
    smallest = np.array([[(p[:, h] >= p[b, h]).mean() for h in range(7)] for b in range(1, 301)])
    single = (1 + (smallest.min(axis=1)[:, None] <= raw).sum(axis=0)) / 301
    assert (raw <= adjusted + 1e-12).all() and (adjusted <= single + 1e-12).all()
    if not grid:
        assert (adjusted < single).any(), "the step-down rejects more than the single step"


def test_a_column_of_many_small_groups_does_not_hide_a_dependence_on_another() -> None:
    # Without a dependence, the range over twenty groups of about fifteen images spreads
    # far wider than the difference between a marker's two large groups. Compared by
    # their raw statistics (max-T), the noise column would set the bar and hide the marker.
    predictions = _predictions(0, marker_effect=0.2)
    rng = np.random.default_rng(7)
    predictions["device"] = rng.choice([f"d{i:02d}" for i in range(20)], len(predictions))

    dependence = metadata_dependence(predictions, ("marker", "device"), CLASSES, ClinicalSettings())

    assert dependence is not None
    assert list(dependence.found_columns()) == ["marker"], dependence.columns


def test_a_copied_column_is_permuted_with_its_original_and_does_not_weaken_it() -> None:
    # One permutation of the calls is shared by the columns at a class, so a copy of a
    # column has the same statistic in every permutation, and its original's adjusted
    # p-value is what it is alone (independent permutations per column would raise it).
    predictions = _predictions(3, marker_effect=0.04)
    labels = predictions["label"]
    called = predictions["p_malignant"].to_numpy() >= 0.5
    strata = [
        *strata_of("marker", predictions["marker"], labels, 10),
        *strata_of("copy", predictions["marker"].copy(), labels, 10),
    ]
    observed = np.array([s.statistic(called[s.inside][None, :])[0] for s in strata])

    permuted = permuted_statistics(strata, called, 2000, np.random.default_rng(0))

    np.testing.assert_array_equal(permuted[:, :2], permuted[:, 2:])
    raw, adjusted = step_down_min_p(observed, permuted)
    np.testing.assert_array_equal(adjusted[:2], step_down_min_p(observed[:2], permuted[:, :2])[1])
    assert 0.01 < adjusted[0] < 0.5 and raw[0] < adjusted[0], "a case where the step matters"


def test_a_model_blind_to_the_metadata_gives_no_finding_in_19_of_20_seeds() -> None:
    findings = [
        bool(
            metadata_dependence(
                _predictions(seed, marker_effect=0.0), COLUMNS, CLASSES, ClinicalSettings(seed=seed)
            ).findings()  # type: ignore[union-attr]
        )
        for seed in range(20)
    ]
    assert sum(findings) <= 1, findings


def test_the_rates_and_the_difference_equal_a_recomputation() -> None:
    predictions = _predictions(1, marker_effect=0.3)
    dependence = metadata_dependence(predictions, ("marker",), CLASSES, ClinicalSettings())
    assert dependence is not None
    assert [c.label for c in dependence.columns] == ["benign", "malignant"], "one per class"
    column = dependence.columns[0]

    benign = predictions[predictions["label"] == "benign"]
    rates = {}
    for value in ("True", "False"):
        group = benign[benign["marker"] == value]
        called = int((group["prediction"] == "malignant").sum())
        rate = dependence.rate("marker", "benign", value)
        assert (rate.n, rate.positive) == (len(group), called)
        wilson = proportion_confint(called, len(group), method="wilson")
        assert (rate.ci_low, rate.ci_high) == pytest.approx(wilson)
        rates[value] = (called / len(group), *wilson)
    # Newcombe's hybrid score interval (method 10, 1998), from the two Wilson intervals.
    (p1, l1, u1), (p2, l2, u2) = rates["True"], rates["False"]
    assert column.difference == pytest.approx(p1 - p2)
    assert column.ci_low == pytest.approx(p1 - p2 - math.hypot(p1 - l1, u2 - p2))
    assert column.ci_high == pytest.approx(p1 - p2 + math.hypot(u1 - p1, p2 - l2))


def test_the_permutation_p_value_agrees_with_scipys_permutation_test() -> None:
    # One true class, two values: the statistic is |rate(a) - rate(b)|.
    rng = np.random.default_rng(5)
    value = rng.choice(["a", "b"], 120)
    called = rng.random(120) < np.where(value == "a", 0.3, 0.2)
    predictions = pd.DataFrame(
        {
            "label": "benign",
            "prediction": np.where(called, "malignant", "benign"),
            "p_malignant": probability(called, rng),
            "column": value,
        }
    )
    settings = ClinicalSettings(permutations=20_000)
    dependence = metadata_dependence(predictions, ("column",), CLASSES, settings)
    assert dependence is not None

    reference = permutation_test(
        (called[value == "a"].astype(float), called[value == "b"].astype(float)),
        lambda a, b: abs(a.mean() - b.mean()),
        permutation_type="independent",
        n_resamples=20_000,
        alternative="greater",
        random_state=0,
    )
    assert 0.02 < reference.pvalue < 0.5, "a case where the two estimates can be compared"
    assert dependence.columns[0].p_value == pytest.approx(reference.pvalue, abs=0.015)


def test_groups_under_the_minimum_are_shown_but_not_compared() -> None:
    predictions = _predictions(2, marker_effect=0.3, n=30)
    settings = ClinicalSettings(min_group_size=40)

    dependence = metadata_dependence(predictions, ("marker",), CLASSES, settings)

    assert dependence is not None and not dependence.findings() and dependence.n_compared == 0
    [column] = dependence.columns
    assert column.label is None and "too few to judge" in column.reason
    assert dependence.rates and not any(rate.judged for rate in dependence.rates)


def test_numbers_are_binned_into_quartiles_and_a_column_of_many_values_is_skipped() -> None:
    predictions = pd.DataFrame(
        {
            "age": [str(a) for a in range(20, 60)] + [""],
            "id": [f"patient-{i}" for i in range(41)],
            "sex": ["f", "m"] * 20 + [""],
        }
    )

    grouping = metadata_groups(predictions, ("age", "id", "sex"), max_groups=20)

    assert grouping.binned == ("age",)
    assert grouping.groups["age"].value_counts().to_dict() == {
        "20–29.75": 10, "29.75–39.5": 10, "39.5–49.25": 10, "49.25–59": 10, EMPTY: 1,
    }  # fmt: skip
    assert set(grouping.groups["sex"]) == {"f", "m", EMPTY}
    assert grouping.skipped == (("id", "41 values, more than max-groups (20); not broken down"),)


def test_the_positive_class_is_the_second_of_two_or_a_declared_one() -> None:
    assert positive_class(CLASSES, ClinicalSettings()) == "malignant"
    assert positive_class(("a", "b", "c"), ClinicalSettings()) is None
    assert positive_class(("a", "b", "c"), ClinicalSettings(positive_class="c")) == "c"
    with pytest.raises(ConfigError, match="positive-class 'd' is not one of the model's classes"):
        positive_class(("a", "b", "c"), ClinicalSettings(positive_class="d"))


def test_too_few_permutations_to_reach_the_level_is_said_as_not_judged() -> None:
    settings = ClinicalSettings(permutations=100, dependence_alpha=0.005)
    dependence = metadata_dependence(_predictions(0, marker_effect=0.4), COLUMNS, CLASSES, settings)

    assert dependence is not None and dependence.targets == 1 and not dependence.judged
    assert not dependence.findings(), "1 / 101 > 0.005: no p-value can reach the level"
    assert dependence_unfound(dependence, False) == (
        "Metadata dependence not judged: with 100 permutations, no adjusted p-value can be "
        "below 0.0099, above dependence-alpha (0.005); set permutations to at least 200."
    )
    judged = metadata_dependence(
        _predictions(0, marker_effect=0.4), COLUMNS, CLASSES,
        ClinicalSettings(permutations=2000, dependence_alpha=0.005),
    )  # fmt: skip
    assert judged is not None and judged.judged and judged.findings()
