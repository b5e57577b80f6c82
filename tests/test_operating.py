"""The operating point against scikit-learn and hand computations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from auditor.clinical import ClinicalSettings, analyse_predictions, operating_point
from auditor.clinical.files import operating_document
from auditor.clinical.operating import (
    _average_precision,
    class_aucs,
    net_benefit,
    predictive_values,
    weighted_curves,
)
from auditor.documents import _clean
from auditor.resample import Resampling


def _scores(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.4
    scores = np.round(np.clip(rng.normal(0.3 + 0.4 * positive, 0.2), 0, 1), 2)  # with ties
    return scores, positive


def _frame(scores: np.ndarray, positive: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"label": np.where(positive, "malignant", "benign"), "p_malignant": scores})


def test_each_resamples_auc_equals_sklearns_on_the_drawn_images() -> None:
    scores, positive = _scores()
    rng = np.random.default_rng(1)
    weights = rng.multinomial(len(scores), np.full(len(scores), 1 / len(scores)), size=4)

    auc, _, _ = weighted_curves(scores, positive, weights.astype(float))

    for row, value in zip(weights, auc, strict=True):
        drawn = np.repeat(np.arange(len(scores)), row)
        assert value == pytest.approx(roc_auc_score(positive[drawn], scores[drawn]))


def test_auc_roc_and_the_rates_at_the_threshold_equal_sklearn_and_counts() -> None:
    scores, positive = _scores()

    operating = operating_point(_frame(scores, positive), "malignant", ClinicalSettings(), 500)

    assert operating is not None
    assert operating.auc[0] == pytest.approx(roc_auc_score(positive, scores))
    assert operating.auc[1] < operating.auc[0] < operating.auc[2]
    for ours, theirs in zip(operating.roc, roc_curve(positive, scores), strict=True):
        np.testing.assert_allclose(ours, theirs)
    called = scores >= 0.5
    assert (operating.sensitivity.hits, operating.sensitivity.n) == (
        (called & positive).sum(), positive.sum(),
    )  # fmt: skip
    assert (operating.specificity.hits, operating.specificity.n) == (
        (~called & ~positive).sum(), (~positive).sum(),
    )  # fmt: skip
    assert operating.ppv.value == pytest.approx((called & positive).sum() / called.sum())
    assert operating.npv.value == pytest.approx((~called & ~positive).sum() / (~called).sum())
    low, high = operating.band
    assert (low <= high).all() and low[-1] == pytest.approx(1.0)


def test_a_target_sensitivity_picks_the_highest_threshold_that_reaches_it() -> None:
    scores, positive = _scores()
    settings = ClinicalSettings(target_sensitivity=0.9)

    operating = operating_point(_frame(scores, positive), "malignant", settings, 200)

    assert operating is not None and operating.chosen_for == "sensitivity 0.9"
    assert operating.sensitivity.value >= 0.9
    higher = scores[scores > operating.threshold].min()  # the next distinct score up
    assert (scores[positive] >= higher).mean() < 0.9


def test_a_target_specificity_picks_the_lowest_threshold_that_reaches_it() -> None:
    scores, positive = _scores()
    settings = ClinicalSettings(target_specificity=0.8)

    operating = operating_point(_frame(scores, positive), "malignant", settings, 200)

    assert operating is not None and operating.specificity.value >= 0.8
    lower = scores[scores < operating.threshold].max()
    assert (scores[~positive] < lower).mean() < 0.8


def test_the_decision_curve_and_predictive_values_equal_hand_computations() -> None:
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1])
    positive = np.array([True, True, False, True, False, False])

    curve = net_benefit(scores, positive, np.array([0.5])).iloc[0]

    # At 0.5: called 0.9, 0.8, 0.6 -> TP 2, FP 1 of 6; odds 1.
    assert curve["model"] == pytest.approx(2 / 6 - 1 / 6)
    assert curve["treat_all"] == pytest.approx(0.5 - 0.5)
    assert curve["treat_none"] == 0
    # Sensitivity 0.9, specificity 0.8 at prevalence 0.1: PPV 0.09 / (0.09 + 0.18).
    ppv, npv = predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / 0.27)
    assert npv == pytest.approx(0.72 / 0.73)


def test_ppv_at_a_declared_prevalence_is_bounded_by_the_rates_intervals() -> None:
    scores, positive = _scores()
    settings = ClinicalSettings(prevalence=0.05)

    operating = operating_point(_frame(scores, positive), "malignant", settings, 200)

    assert operating is not None and operating.ppv_at_prevalence is not None
    value, low, high = operating.ppv_at_prevalence
    s, p = operating.sensitivity, operating.specificity
    assert value == pytest.approx(predictive_values(s.value, p.value, 0.05)[0])
    assert low == pytest.approx(predictive_values(s.ci_low, p.ci_low, 0.05)[0])
    assert high == pytest.approx(predictive_values(s.ci_high, p.ci_high, 0.05)[0])
    assert value < operating.ppv.value, "a rarer disease, a lower PPV"


@pytest.mark.parametrize(("prevalence", "npv"), [(0.3, 0.7), (1.0, 0.0)])
def test_a_model_calling_every_image_negative_has_no_ppv_at_a_declared_prevalence(
    prevalence: float, npv: float
) -> None:
    """Nobody called positive: the PPV at any prevalence is undefined (NaN, null in
    metrics.json), not a division by zero; the NPV is the share of negatives."""
    scores, positive = _scores()
    settings = ClinicalSettings(prevalence=prevalence)

    operating = operating_point(_frame(scores * 0.4, positive), "malignant", settings, 200)

    assert operating is not None and operating.sensitivity.value == 0
    assert operating.ppv_at_prevalence is not None and operating.npv_at_prevalence is not None
    value, low, high = operating.ppv_at_prevalence
    assert np.isnan(value) and 0 <= low <= high <= 1, "bounds from the rates' intervals"
    assert operating.npv_at_prevalence[0] == pytest.approx(npv)
    document = json.loads(json.dumps(_clean(operating_document(operating)), allow_nan=False))
    assert document["ppv_at_prevalence"]["value"] is None


def test_data_of_one_class_have_no_operating_point() -> None:
    frame = _frame(np.array([0.2, 0.7]), np.array([True, True]))
    assert operating_point(frame, "malignant", ClinicalSettings(), 100) is None


def test_average_precision_and_the_pr_curve_equal_sklearn_for_each_resample() -> None:
    scores, positive = _scores()
    rng = np.random.default_rng(2)
    weights = rng.multinomial(len(scores), np.full(len(scores), 1 / len(scores)), size=3)

    _, tpr, fpr = weighted_curves(scores, positive, weights.astype(float))
    counts = [(weights * mask).sum(axis=1, keepdims=True) for mask in (positive, ~positive)]
    ap, _ = _average_precision(tpr, fpr, *counts)

    for row, value in zip(weights, ap, strict=True):
        drawn = np.repeat(np.arange(len(scores)), row)
        assert value == pytest.approx(average_precision_score(positive[drawn], scores[drawn]))
    operating = operating_point(_frame(scores, positive), "malignant", ClinicalSettings(), 300)
    assert operating is not None
    assert operating.average_precision[0] == pytest.approx(
        average_precision_score(positive, scores)
    )
    low, high = operating.pr_band
    assert (low <= high).all()
    for ours, theirs in zip(operating.pr, precision_recall_curve(positive, scores), strict=True):
        np.testing.assert_allclose(ours, theirs)


def test_every_class_gets_its_one_vs_rest_auc_with_an_interval_for_a_few_classes() -> None:
    rng = np.random.default_rng(4)
    classes = ("a", "b", "c")
    labels = rng.choice(classes, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * (labels[:, None] == np.array(classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"label": labels} | {f"p_{c}": probs[:, k] for k, c in enumerate(classes)})
    frame["prediction"] = np.array(classes)[probs.argmax(axis=1)]
    frame["confidence"] = probs.max(axis=1)
    frame["correct"] = frame["prediction"] == frame["label"]
    frame["path"], frame["index"] = [f"{i}.png" for i in range(300)], np.arange(300)

    aucs = class_aucs(frame, classes, Resampling(), 300, 0)
    for k, name in enumerate(classes):
        value, low, high = aucs[name]
        assert value == pytest.approx(roc_auc_score(labels == name, probs[:, k]))
        assert low < value < high
    clinical = analyse_predictions(frame, (), classes, ClinicalSettings(report_classes=2), 100)
    assert clinical.class_auc == {}, "above report-classes: not computed"
    assert set(analyse_predictions(frame, (), classes, ClinicalSettings(), 100).class_auc) == set(
        classes
    )
