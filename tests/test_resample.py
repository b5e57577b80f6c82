"""Clustered bootstrap: a declared patient column makes every resample draw patients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import Result

from auditor.clinical.operating import bootstrap_curves
from auditor.clinical.rates import rates, wilson_rate
from auditor.metrics import bootstrap_ci
from auditor.resample import Resampling, grouped_sums
from tests.helpers import invoke, one_line_error

COPIES = 4
"""Identical images per patient."""


def _patients(n: int = 40, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = rng.uniform(size=n) < 0.5
    scores = np.clip(0.5 + 0.25 * (positive - 0.5) + rng.normal(0, 0.25, n), 0, 1)
    return scores, positive


def _copied(values: np.ndarray) -> np.ndarray:
    return np.repeat(values, COPIES)


def _by_patient(n: int) -> Resampling:
    frame = pd.DataFrame({"patient": [f"p{i:03d}" for i in range(n) for _ in range(COPIES)]})
    return Resampling.of(frame, "patient")


def test_patient_bootstrap_of_identical_copies_equals_the_bootstrap_of_one_image_each() -> None:
    scores, positive = _patients()
    clustered = bootstrap_curves(_copied(scores), _copied(positive), 300, 5, _by_patient(40))
    one_each = bootstrap_curves(scores, positive, 300, 5)
    images = bootstrap_curves(_copied(scores), _copied(positive), 300, 5)

    assert clustered[0] == pytest.approx(one_each[0])  # AUC interval
    assert clustered[1] == pytest.approx(one_each[1])  # average precision interval
    np.testing.assert_allclose(clustered[2][0], one_each[2][0])  # ROC band
    clustered_width = clustered[0][1] - clustered[0][0]
    image_width = images[0][1] - images[0][0]
    # Four copies pretend to be four times the evidence: about half the width.
    assert image_width < 0.7 * clustered_width


def test_patient_bootstrap_of_accuracy_and_of_a_rate_equals_the_per_patient_one() -> None:
    scores, positive = _patients()
    labels = positive.astype(np.int64)
    preds = (scores >= 0.5).astype(np.int64)
    clustered = bootstrap_ci(_copied(labels), _copied(preds), 2, 400, 9, resampling=_by_patient(40))
    one_each = bootstrap_ci(labels, preds, 2, 400, 9)
    images = bootstrap_ci(_copied(labels), _copied(preds), 2, 400, 9)
    assert np.asarray(clustered) == pytest.approx(np.asarray(one_each))
    assert images[0][1] - images[0][0] < clustered[0][1] - clustered[0][0]

    called, positives = (scores >= 0.5)[:, None], positive[:, None]
    one_image_each = pd.DataFrame({"patient": [f"p{i:03d}" for i in range(40)]})
    copies = _copied(called[:, 0])[:, None], _copied(positives[:, 0])[:, None]
    (sensitivity,) = rates(*copies, _by_patient(40), 400, 1)
    (per_patient,) = rates(called, positives, Resampling.of(one_image_each, "patient"), 400, 1)
    assert (sensitivity.ci_low, sensitivity.ci_high) == pytest.approx(
        (per_patient.ci_low, per_patient.ci_high)
    )
    assert sensitivity.n == COPIES * per_patient.n  # the counts stay the images'
    wilson = wilson_rate(sensitivity.hits, sensitivity.n)
    assert wilson.ci_high - wilson.ci_low < sensitivity.ci_high - sensitivity.ci_low


def test_images_without_a_patient_are_groups_of_their_own() -> None:
    frame = pd.DataFrame({"patient": ["a", "a", "", None, "b"]})
    resampling = Resampling.of(frame, "patient")

    assert resampling.groups == 4
    assert resampling.codes is not None
    assert resampling.codes[0] == resampling.codes[1]
    assert len(set(resampling.codes[2:4].tolist())) == 2
    assert resampling.unvalued == 2
    assert "2 images without a value" in resampling.describe()
    weights = resampling.weights(5, 50, np.random.default_rng(0))
    assert (weights[:, 0] == weights[:, 1]).all()
    # Four groups drawn per resample: one weight per group (image 1 repeats image 0's).
    assert (weights[:, [0, 2, 3, 4]].sum(axis=1) == 4).all()
    assert Resampling().describe() == "images"


def test_grouped_sums_equal_a_loop_over_rows_and_groups() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, 12)
    weights = rng.uniform(size=(4, 12))

    expected = np.array([[weights[r, codes == g].sum() for g in range(3)] for r in range(4)])
    np.testing.assert_allclose(grouped_sums(codes, weights, 3), expected)
    per_row = rng.integers(0, 3, (4, 12))
    expected = np.array([[weights[r, per_row[r] == g].sum() for g in range(3)] for r in range(4)])
    np.testing.assert_allclose(grouped_sums(per_row, weights, 3), expected)


def test_the_shared_audit_resamples_its_declared_patients_and_does_not_break_them_down(
    audit: tuple[Result, Path],
) -> None:
    folder = audit[1]
    metrics = json.loads((folder / "metrics.json").read_text())
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"patient": str})

    assert metrics["resampling"] == {
        "unit": "groups", "column": "patient", "groups": 6, "images_without_value": 0,
    }  # fmt: skip
    # The accuracy interval is the patient bootstrap's, recomputed from predictions.csv.
    classes = metrics["classes"]
    labels = predictions["label"].map(classes.index).to_numpy(np.int64)
    preds = predictions["prediction"].map(classes.index).to_numpy(np.int64)
    resampling = Resampling.of(predictions, "patient")
    (low, high), _ = bootstrap_ci(labels, preds, 2, 1000, 1, resampling=resampling)
    assert (metrics["accuracy"]["ci_low"], metrics["accuracy"]["ci_high"]) == pytest.approx(
        (low, high)
    )
    html = (folder / "report.html").read_text()
    assert "percentile bootstrap over groups of patient (6 groups)" in html
    assert "Confidence intervals resample groups of patient (6 groups), not images" in html
    subgroups = pd.read_csv(folder / "subgroups.csv")
    assert set(subgroups["column"]) == {"site"}


def test_a_patient_column_the_data_lacks_is_a_one_line_error_before_any_file(
    tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path),
        "--patient-column", "subject",
    )  # fmt: skip

    one_line_error(result, "patient-column 'subject' is not a column", "site, patient")
    assert not any(tmp_path.iterdir())


def test_few_patients_never_narrow_a_rate_below_wilson_and_undrawn_ones_are_not_judged() -> None:
    one = pd.DataFrame({"patient": ["p"] * 20})
    everyone = np.ones((20, 1), bool)
    (rate,) = rates(everyone, everyone, Resampling.of(one, "patient"), 500, 0)
    wilson = wilson_rate(20, 20)
    assert (rate.ci_low, rate.ci_high) == pytest.approx((wilson.ci_low, wilson.ci_high))

    # The positives all belong to one of 200 patients: most resamples miss it.
    frame = pd.DataFrame({"patient": ["P"] * 5 + [f"n{i}" for i in range(199)]})
    positive = np.r_[np.ones(5, bool), np.zeros(199, bool)][:, None]
    (sensitivity,) = rates(positive, positive, Resampling.of(frame, "patient"), 500, 0)
    assert sensitivity.value == 1.0 and np.isnan(sensitivity.ci_low)


def test_a_subset_counts_its_own_groups_and_images_without_a_value() -> None:
    frame = pd.DataFrame({"patient": ["a", "a", "b", "", "", "c"]})
    resampling = Resampling.of(frame, "patient")

    kept = resampling.subset(np.array([True, True, False, True, False, False]))

    assert (kept.groups, kept.unvalued, kept.valued) == (2, 1, 1)
    assert (
        kept.describe()
        == "groups of patient (2 groups; 1 image without a value, each a group of its own)"
    )
