"""Subgroups and fairness: per-group counts against pandas, the vectorised bootstrap's
disparities against fairlearn's functions, small groups left out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    true_positive_rate,
)

from auditor.clinical import ClinicalSettings
from auditor.clinical.fairness import _resampled, fairness
from auditor.clinical.groups import Grouping, metadata_groups
from tests.helpers import probability


def _predictions(seed: int = 0, n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(["benign", "malignant"], n)
    site = rng.choice(["A", "B", "C", "D"], n, p=[0.4, 0.3, 0.29, 0.01])
    called = rng.random(n) < np.where(label == "malignant", 0.8, np.where(site == "A", 0.3, 0.1))
    return pd.DataFrame(
        {
            "label": label,
            "prediction": np.where(called, "malignant", "benign"),
            "p_malignant": probability(called, rng),
            "site": site,
        }
    )


def _by_site(predictions: pd.DataFrame) -> Grouping:
    return metadata_groups(predictions, ("site",), ClinicalSettings().max_groups)


def test_each_group_counts_equal_a_groupby() -> None:
    predictions = _predictions()

    result = fairness(predictions, _by_site(predictions), "malignant", ClinicalSettings(), 100)

    assert result is not None
    for group in result.groups:
        rows = predictions[predictions["site"] == group.value]
        y, called = rows["label"] == "malignant", rows["prediction"] == "malignant"
        assert group.n == len(rows)
        assert (group.sensitivity.hits, group.sensitivity.n) == ((y & called).sum(), y.sum())
        assert (group.specificity.hits, group.specificity.n) == ((~y & ~called).sum(), (~y).sum())
        assert (group.ppv.hits, group.ppv.n) == ((y & called).sum(), called.sum())
    assert [g.too_few for g in result.groups] == [False, False, False, True], "D: 1% of 500"


def test_the_vectorised_disparities_equal_fairlearns_on_the_judged_groups() -> None:
    predictions = _predictions()
    judged = predictions[predictions["site"] != "D"]
    y = (judged["label"] == "malignant").to_numpy()
    called = (judged["prediction"] == "malignant").to_numpy()
    site = judged["site"].to_numpy()
    codes, _ = pd.factorize(judged["site"], sort=True)

    ones = _resampled(codes.astype(np.int64), y, called, np.ones((1, len(y))))[0]

    expected = [
        demographic_parity_difference(y, called, sensitive_features=site),
        demographic_parity_ratio(y, called, sensitive_features=site),
        equalized_odds_difference(y, called, sensitive_features=site),
        MetricFrame(
            metrics=true_positive_rate, y_true=y, y_pred=called, sensitive_features=site
        ).difference(),
    ]
    assert ones == pytest.approx(expected)
    result = fairness(predictions, _by_site(predictions), "malignant", ClinicalSettings(), 400)
    assert result is not None
    assert [d.value for d in result.disparities] == pytest.approx(expected)
    for d in result.disparities:
        assert d.ci_low <= d.ci_high
    assert result.lowest[("site", "specificity")] == "A", "A's benign images are called most"
