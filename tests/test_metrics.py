"""Behavioural tests of the metrics, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, roc_auc_score

from auditor.aggregate import SubgroupRow, subgroup_table, wilson_interval
from auditor.metrics import (
    ECE_BINS,
    CalibrationBin,
    Metrics,
    bootstrap_ci,
    calibration_bins,
    compute_metrics,
    dense_confusion,
    expected_calibration_error,
)

CLASSES = ("cat", "dog", "fox")

# 10 images, 3 classes. Row: true label, then probabilities (argmax = prediction).
#   idx label pred  conf  correct
#   0   0     0     .90   yes
#   1   0     0     .78   yes
#   2   0     0     .62   yes
#   3   0     1     .65   no
#   4   1     1     .85   yes
#   5   1     1     .70   yes
#   6   1     2     .70   no
#   7   2     2     .90   yes
#   8   2     2     .75   yes
#   9   2     0     .55   no
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int64)
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.78, 0.12, 0.10],
        [0.62, 0.30, 0.08],
        [0.30, 0.65, 0.05],
        [0.10, 0.85, 0.05],
        [0.20, 0.70, 0.10],
        [0.05, 0.25, 0.70],
        [0.05, 0.05, 0.90],
        [0.10, 0.15, 0.75],
        [0.55, 0.05, 0.40],
    ],
    dtype=np.float32,
)


@pytest.fixture(scope="module")
def hand() -> Metrics:
    return compute_metrics(LABELS, PROBS, CLASSES, bootstrap=200, seed=0)


def test_headline_metrics_match_hand_computation(hand: Metrics) -> None:
    assert hand.n_images == 10
    # 3 + 2 + 2 correct out of 10.
    assert hand.accuracy.value == pytest.approx(0.7)
    # Recalls 3/4, 2/3, 2/3.
    assert hand.balanced_accuracy.value == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    # Rows are true classes, columns predictions.
    assert dense_confusion(hand.confusion, 3).tolist() == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert sum(cell.count for cell in hand.confusion) == 10


def test_per_class_metrics_match_hand_computation(hand: Metrics) -> None:
    got = {
        c.name: (c.precision, c.sensitivity, c.specificity, c.f1, c.support) for c in hand.per_class
    }
    # cat: TP 3, FN 1, FP 1 (fox->cat), TN 5 of 6 negatives.
    # dog: TP 2, FN 1, FP 1 (cat->dog), TN 6 of 7.   fox: TP 2, FN 1, FP 1 (dog->fox), TN 6 of 7.
    expected = {
        "cat": (3 / 4, 3 / 4, 5 / 6, 3 / 4, 4),
        "dog": (2 / 3, 2 / 3, 6 / 7, 2 / 3, 3),
        "fox": (2 / 3, 2 / 3, 6 / 7, 2 / 3, 3),
    }
    assert [c.name for c in hand.per_class] == list(CLASSES)
    for name, values in expected.items():
        assert got[name][:4] == pytest.approx(values[:4]), name
        assert got[name][4] == values[4], name


def test_auc_matches_pair_counting(hand: Metrics) -> None:
    # One-vs-rest AUC = fraction of (positive, negative) pairs ranked correctly.
    # cat: 23 of 4*6 pairs (0.30 < 0.55 only); dog: 19 of 3*7; fox: 20 of 3*7.
    aucs = [c.auc for c in hand.per_class]
    assert aucs == pytest.approx([23 / 24, 19 / 21, 20 / 21])
    assert hand.macro_auc == pytest.approx((23 / 24 + 19 / 21 + 20 / 21) / 3)


def test_ece_of_hand_example_with_fifteen_bins(hand: Metrics) -> None:
    # Bins of width 1/15, right-closed. Members:
    #   (0.533, 0.600]: .55 wrong              -> 1 * |0 - .55|   = .55
    #   (0.600, 0.667]: .62 ok, .65 wrong      -> 2 * |.5 - .635| = .27
    #   (0.667, 0.733]: .70 ok, .70 wrong      -> 2 * |.5 - .70|  = .40
    #   (0.733, 0.800]: .78 ok, .75 ok         -> 2 * |1 - .765|  = .47
    #   (0.800, 0.867]: .85 ok                 -> 1 * |1 - .85|   = .15
    #   (0.867, 0.933]: .90 ok, .90 ok         -> 2 * |1 - .90|   = .20
    assert hand.ece == pytest.approx(2.04 / 10, abs=1e-6)
    assert len(hand.calibration) == ECE_BINS
    counts = [b.count for b in hand.calibration]
    assert counts == [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 1, 2, 0]
    assert hand.calibration[9].accuracy == pytest.approx(0.5)
    assert hand.calibration[9].confidence == pytest.approx(0.635, abs=1e-6)
    assert math.isnan(hand.calibration[0].accuracy)
    assert math.isnan(hand.calibration[0].confidence)


def test_bootstrap_intervals_bracket_the_point_estimates(hand: Metrics) -> None:
    for estimate in (hand.accuracy, hand.balanced_accuracy):
        assert 0.0 <= estimate.ci_low <= estimate.value <= estimate.ci_high <= 1.0
        assert estimate.ci_low < estimate.ci_high


def test_class_with_zero_support_gives_nan_sensitivity_not_a_crash() -> None:
    labels = np.array([0, 0, 1, 1], dtype=np.int64)
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]], dtype=np.float32
    )

    metrics = compute_metrics(labels, probs, ("a", "b", "c"), bootstrap=100, seed=0)

    a, b, c = metrics.per_class
    assert c.support == 0
    assert math.isnan(c.sensitivity)
    assert math.isnan(c.auc)
    assert c.precision == 0.0  # predicted once, never right
    assert c.specificity == pytest.approx(3 / 4)  # 3 of the 4 images correctly not called "c"
    assert a.sensitivity == pytest.approx(1 / 2)
    assert b.sensitivity == pytest.approx(1.0)
    assert metrics.accuracy.value == pytest.approx(3 / 4)
    # Balanced accuracy averages over the classes present: (1/2 + 1) / 2.
    assert metrics.balanced_accuracy.value == pytest.approx(3 / 4)
    assert dense_confusion(metrics.confusion, 3).tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    # Only the non-zero cells are kept, by true class then prediction.
    assert [(c.true, c.predicted, c.count) for c in metrics.confusion] == [
        (0, 0, 1),
        (0, 2, 1),
        (1, 1, 2),
    ]
    assert metrics.macro_auc is not None


def test_only_one_class_present_gives_no_macro_auc() -> None:
    labels = np.array([1, 1, 1], dtype=np.int64)
    probs = np.array([[0.4, 0.6], [0.3, 0.7], [0.9, 0.1]], dtype=np.float32)

    metrics = compute_metrics(labels, probs, ("a", "b"), bootstrap=100, seed=0)

    assert metrics.macro_auc is None
    assert all(math.isnan(c.auc) for c in metrics.per_class)
    assert math.isnan(metrics.per_class[1].specificity)  # no negatives for "b"
    assert metrics.accuracy.value == pytest.approx(2 / 3)


def test_two_class_macro_auc_equals_sklearn_on_positive_column() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 40).astype(np.int64)
    p1 = np.clip(0.3 * labels + rng.uniform(0, 0.7, 40), 0, 1).astype(np.float32)
    probs = np.stack([1 - p1, p1], axis=1)

    metrics = compute_metrics(labels, probs, ("neg", "pos"), bootstrap=100, seed=0)

    expected = roc_auc_score(labels, probs[:, 1])
    assert 0.5 < expected < 1.0  # a non-trivial case
    assert metrics.macro_auc == pytest.approx(expected)
    assert metrics.per_class[1].auc == pytest.approx(expected)
    assert metrics.per_class[0].auc == pytest.approx(roc_auc_score(labels == 0, probs[:, 0]))


def test_calibration_bins_and_ece_on_hand_example_with_confidence_one() -> None:
    confidence = np.array([0.1, 0.3, 0.35, 0.7, 1.0, 0.9], dtype=np.float32)
    correct = np.array([False, True, False, True, True, False])

    bins = calibration_bins(confidence, correct, bins=5)

    assert [b.lower for b in bins] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [b.upper for b in bins] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [b.count for b in bins] == [1, 2, 0, 1, 2]  # 1.0 lands in the last bin
    assert bins[4].accuracy == pytest.approx(0.5)
    assert bins[4].confidence == pytest.approx(0.95)
    assert bins[1].accuracy == pytest.approx(0.5)
    assert bins[1].confidence == pytest.approx(0.325)
    assert math.isnan(bins[2].accuracy) and math.isnan(bins[2].confidence)
    # (1*|0-.1| + 2*|.5-.325| + 1*|1-.7| + 2*|.5-.95|) / 6 = (.1 + .35 + .3 + .9) / 6
    assert expected_calibration_error(bins) == pytest.approx(1.65 / 6, abs=1e-6)


def test_confidence_of_exactly_one_lands_in_the_last_default_bin() -> None:
    bins = calibration_bins(np.array([1.0, 1.0], dtype=np.float32), np.array([True, False]))

    assert len(bins) == ECE_BINS
    assert bins[-1].count == 2
    assert sum(b.count for b in bins) == 2
    assert expected_calibration_error(bins) == pytest.approx(0.5)


def test_ece_of_no_images_is_nan() -> None:
    empty = tuple(CalibrationBin(0.0, 1.0, 0, float("nan"), float("nan")) for _ in range(3))

    assert math.isnan(expected_calibration_error(empty))


def test_bootstrap_ci_is_reproducible_per_seed_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60).astype(np.int64)
    preds = np.where(rng.uniform(size=60) < 0.7, labels, (labels + 1) % 3).astype(np.int64)
    accuracy = float((labels == preds).mean())

    first = bootstrap_ci(labels, preds, 3, resamples=500, seed=11)
    again = bootstrap_ci(labels, preds, 3, resamples=500, seed=11)
    other = bootstrap_ci(labels, preds, 3, resamples=500, seed=12)
    chunked = bootstrap_ci(labels, preds, 3, resamples=500, seed=11, chunk=7)

    assert first == again
    assert other != first
    # Chunking changes memory use, not the random stream.
    assert chunked[0] == pytest.approx(first[0])
    assert chunked[1] == pytest.approx(first[1])
    (acc_low, acc_high), (bal_low, bal_high) = first
    assert acc_low < accuracy < acc_high
    recalls = [float((preds[labels == k] == k).mean()) for k in range(3)]
    assert bal_low < float(np.mean(recalls)) < bal_high
    assert acc_low >= 0.0 and acc_high <= 1.0


def test_bootstrap_ci_of_a_perfect_classifier_is_degenerate_at_one() -> None:
    labels = np.array([0, 1, 0, 1, 1], dtype=np.int64)

    (acc_low, acc_high), (bal_low, bal_high) = bootstrap_ci(
        labels, labels, 2, resamples=200, seed=0
    )

    assert (acc_low, acc_high, bal_low, bal_high) == (1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), Stat Med 17:857, table I, method 3 (score interval), and 5/10.
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_interval_known_values(successes: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-5 + 1e-9)


def test_wilson_interval_of_no_trials_is_nan() -> None:
    low, high = wilson_interval(0, 0)

    assert math.isnan(low) and math.isnan(high)


def test_subgroup_table_counts_accuracy_and_wilson_interval_per_value() -> None:
    predictions = pd.DataFrame(
        {
            "correct": pd.Series([True, True, False, True, False, True], dtype="bool"),
            "site": pd.Series(["A", "A", "A", "B", None, "B"], dtype="string"),
            "id": pd.Series([str(i) for i in range(6)], dtype="string"),
        }
    )
    many = pd.DataFrame(
        {
            "correct": pd.Series([True] * 21, dtype="bool"),
            "site": pd.Series(["A"] * 21, dtype="string"),
            "id": pd.Series([str(i) for i in range(21)], dtype="string"),
        }
    )

    rows = subgroup_table(predictions, ("site",))
    skipped = subgroup_table(many, ("site", "id"))

    assert [(r.column, r.value, r.n) for r in rows] == [
        ("site", "(empty)", 1),
        ("site", "A", 3),
        ("site", "B", 2),
    ]
    assert [r.accuracy for r in rows] == pytest.approx([0.0, 2 / 3, 1.0])
    assert rows[1] == SubgroupRow("site", "A", 3, pytest.approx(2 / 3), *wilson_interval(2, 3))
    # A column with more than 20 distinct values is left out.
    assert [r.column for r in skipped] == ["site"]


def test_sparse_confusion_and_specificity_equal_sklearns_dense_ones_for_many_classes() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 40, size=300)
    probs = rng.dirichlet(np.full(60, 0.3), size=300).astype(np.float32)
    classes = tuple(f"c{k}" for k in range(60))

    metrics = compute_metrics(labels, probs, classes, bootstrap=100, seed=0)

    preds = probs.argmax(axis=1)
    expected = confusion_matrix(labels, preds, labels=list(range(60)))
    assert (dense_confusion(metrics.confusion, 60) == expected).all()
    assert len(metrics.confusion) == np.count_nonzero(expected)
    # Specificity TN / (TN + FP) from sklearn's one-vs-rest matrices [[TN, FP], [FN, TP]].
    (tn, fp), _ = multilabel_confusion_matrix(labels, preds, labels=list(range(60))).transpose(
        1, 2, 0
    )
    for k, c in enumerate(metrics.per_class):
        assert c.specificity == pytest.approx(tn[k] / (tn[k] + fp[k])), c.name
