"""Calibration of the positive class against scikit-learn, on data calibrated by
construction and on over-confident data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from auditor.aggregate.calibration import calibration_sentence
from auditor.clinical import calibration
from auditor.clinical.calibration import class_ece, positive_calibration
from auditor.metrics import calibration_bins, expected_calibration_error


def _frame(temperature: float, seed: int = 0, n: int = 2000) -> pd.DataFrame:
    """Probabilities whose true log-odds are ``temperature`` times the stated ones."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 2.5, n)
    p = 1 / (1 + np.exp(-logit))
    y = rng.random(n) < 1 / (1 + np.exp(-temperature * logit))
    return pd.DataFrame(
        {"label": np.where(y, "malignant", "benign"), "p_malignant": p, "p_benign": 1 - p}
    )


def test_slope_intercept_and_brier_equal_an_unpenalised_sklearn_fit() -> None:
    frame = _frame(0.5)
    p = frame["p_malignant"].to_numpy()
    y = (frame["label"] == "malignant").to_numpy()

    calibration = positive_calibration(frame, "malignant")

    fit = LogisticRegression(penalty=None).fit(np.log(p / (1 - p))[:, None], y)
    assert calibration is not None
    assert calibration.slope[0] == pytest.approx(fit.coef_[0, 0], rel=1e-4)
    assert calibration.intercept[0] == pytest.approx(fit.intercept_[0], abs=1e-4)
    assert calibration.brier == pytest.approx(brier_score_loss(y, p))
    assert sum(b.n for b in calibration.curve) == len(frame)
    assert calibration.slope[2] < 1, "true log-odds half the stated: over-confident"
    assert "is over-confident" in calibration_sentence(calibration)


def test_calibrated_data_have_a_slope_interval_around_one() -> None:
    calibration = positive_calibration(_frame(1.0), "malignant")

    assert calibration is not None and calibration.slope[1] < 1 < calibration.slope[2]
    assert "consistent with calibrated" in calibration_sentence(calibration)


@pytest.mark.parametrize("cells", [4_000_000, 7])  # one block; blocks of 2 rows
def test_each_class_ece_is_its_one_vs_rest_ece(cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "_CELLS", cells)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), 300)
    frame = pd.DataFrame(probs, columns=["p_a", "p_b", "p_c"])
    frame["label"] = rng.choice(["a", "b", "c"], 300)

    eces = class_ece(frame, ("a", "b", "c"))

    for k, name in enumerate("abc"):
        bins = calibration_bins(probs[:, k].astype(np.float32), (frame["label"] == name).to_numpy())
        assert eces[k] == pytest.approx(expected_calibration_error(bins))
