"""Metadata dependence: a planted dependence is found with the right column, a blind model
gives no finding over many seeds, and the numbers equal independent computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import permutation_test
from statsmodels.stats.proportion import proportion_confint

from auditor.clinical import ClinicalSettings, Dependence, positive_class
from auditor.clinical import metadata_dependence as dependence_of_groups
from auditor.clinical.groups import EMPTY, metadata_groups
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
    [column] = dependence.columns

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

    assert dependence is not None and not dependence.findings()
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
