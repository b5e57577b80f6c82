"""Calibration of a multi-label model, label by label (auditor.multilabel.calibration):
every figure against an independent fit, labels stretched to a known miscalibration
found as such, calibrated labels not, and an audit's page one as recomputed from its
``predictions.csv``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from auditor.aggregate.label_calibration import (
    label_calibration_findings,
    label_calibration_unfound,
)
from auditor.clinical.calibration import positive_calibration
from auditor.documents import label_calibration_document
from auditor.multilabel.calibration import label_calibration, miscalibrated
from auditor.policy import evaluate_policy, parse_policy
from auditor.resample import Resampling
from tests.labels import LABELS, make_calibration_dataset, run_label_audit, scaled_labels


def _cell(row: np.ndarray, names: tuple[str, ...]) -> str:
    return ";".join(n for n, on in zip(names, row, strict=True) if on) or "-"


def _predictions(seed: int, scales: tuple[float, ...], n: int = 600) -> pd.DataFrame:
    """Labels drawn from their true log-odds ``z`` and stated as ``sigmoid(scale * z)``:
    a scale of 1 is calibrated, above 1 over-confident, below 1 under-confident."""
    rng = np.random.default_rng(seed)
    names = tuple(f"label{k}" for k in range(len(scales)))
    z = rng.normal(0, 2, (n, len(scales)))
    truth = rng.random(z.shape) < 1 / (1 + np.exp(-z))
    stated = 1 / (1 + np.exp(-z * np.asarray(scales)))
    return pd.DataFrame(
        {"label": [_cell(r, names) for r in truth]}
        | {f"p_{name}": stated[:, k] for k, name in enumerate(names)}
    )


def _names(predictions: pd.DataFrame) -> tuple[str, ...]:
    return tuple(c[2:] for c in predictions.columns if c.startswith("p_"))


def _calibrate(predictions: pd.DataFrame, resamples: int = 200) -> tuple:
    return label_calibration(predictions, _names(predictions), Resampling(), resamples, 0)


def _has(predictions: pd.DataFrame, name: str) -> np.ndarray:
    return predictions["label"].str.split(";").map(lambda c: name in c).to_numpy(dtype=bool)


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """The ECE in equal-width bins ``(lower, upper]`` (0 in the first), from numpy."""
    which = np.clip(np.ceil(p * bins) - 1, 0, bins - 1).astype(int)
    gaps = [abs(y[which == b].sum() - p[which == b].sum()) for b in range(bins)]
    return float(sum(gaps) / len(p))


def _slope(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of an unpenalised logistic fit of ``y`` on ``logit(p)``."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    unpenalised = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)
    fit = unpenalised.fit(np.log(p / (1 - p))[:, None], y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def test_every_figure_equals_an_independent_fit_and_the_single_label_path() -> None:
    predictions = _predictions(0, (1.0, 2.5, 0.5))
    for c, name in zip(_calibrate(predictions), _names(predictions), strict=True):
        p, y = predictions[f"p_{name}"].to_numpy(), _has(predictions, name)
        slope, intercept = _slope(p, y)
        assert c.fit is not None and c.positives == y.sum()
        assert c.fit.slope[0] == pytest.approx(slope, rel=1e-4)
        assert c.fit.intercept[0] == pytest.approx(intercept, abs=1e-4)
        assert c.fit.brier == pytest.approx(brier_score_loss(y, p))
        assert c.ece.value == pytest.approx(_ece(p, y))
        assert c.ece.ci_low <= c.ece.ci_high
        single = pd.DataFrame({"label": np.where(y, name, "other"), f"p_{name}": p})
        assert c.fit == positive_calibration(single, name)


def test_stretched_labels_are_found_with_their_known_slopes() -> None:
    calibrated, over, under = _calibrate(_predictions(1, (1.0, 3.0, 1 / 3)))

    assert calibrated.verdict == "consistent"
    assert over.verdict == "over-confident" and over.fit is not None
    assert over.fit.slope[1] < 1 / 3 < over.fit.slope[2]
    assert under.verdict == "under-confident" and under.fit is not None
    assert under.fit.slope[1] < 3 < under.fit.slope[2]
    assert {c.label for c in miscalibrated((calibrated, over, under))} == {"label1", "label2"}


def test_calibrated_labels_are_flagged_about_as_often_as_the_level_says() -> None:
    flagged = sum(
        len(miscalibrated(_calibrate(_predictions(seed, (1.0, 1.0, 1.0)), resamples=20)))
        for seed in range(20)
    )
    # 60 calibrated labels, each flagged with chance 5%: 3 expected, more than 7 in 1%.
    assert flagged <= 7


def test_labels_without_a_fit_are_said_with_why() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 400)
    ok = rng.random(400) < 1 / (1 + np.exp(-z))
    apart = rng.random(400) < 0.3
    names = ("none", "ok", "apart", "flat")
    predictions = pd.DataFrame({
        "label": [_cell(np.array([False, b, c, c]), names) for b, c in zip(ok, apart, strict=True)],
        "p_none": rng.uniform(0, 0.2, 400),
        "p_ok": 1 / (1 + np.exp(-z)),
        "p_apart": np.where(apart, 0.9, 0.1),  # separates the images with it
        "p_flat": np.full(400, 0.4),  # one probability: a dead output
    })  # fmt: skip
    calibrations = _calibrate(predictions, resamples=50)
    none, fitted, separated, flat = calibrations

    assert none.fit is None and none.verdict == "not fitted" and none.positives == 0
    assert none.reason == "no image has it"
    assert none.ece.value == pytest.approx(predictions["p_none"].mean())
    assert fitted.verdict == "consistent" and fitted.reason == ""
    assert separated.fit is not None and separated.verdict == "not fitted"
    assert separated.reason == "its probability separates the images with it from those without"
    assert separated.fit.brier == pytest.approx(0.01)
    assert (
        flat.verdict == "not fitted" and flat.reason == "its probability is the same on every image"
    )
    rows = label_calibration_document(calibrations)
    assert rows[0]["slope"] is None and rows[0]["curve"] is None and rows[2]["slope"] is not None
    worst = max(calibrations, key=lambda c: c.ece.value)
    assert label_calibration_unfound(calibrations) == (
        "Calibration: no label's calibration slope excludes 1 (1 of 4 labels fitted; 3 not "
        f"fitted, see Calibration per label for why); the highest is {worst.label}'s, ECE "
        f"{worst.ece.value:.3f}."
    )
    assert _policy(rows)["findings.miscalibrated_labels"] == 0
    unfitted = (none, separated, flat)
    assert label_calibration_unfound(unfitted).startswith(
        "Calibration not judged: no label's recalibration could be fitted"
    )
    assert _policy(label_calibration_document(unfitted))["findings.miscalibrated_labels"] is None


def _policy(rows: list[dict]) -> dict:
    """The derived policy values of a document with these label calibrations."""
    document = {"trust": {"methods": [], "shortcuts": None}, "label_calibration": rows}
    return {
        o.criterion.metric: o.value
        for o in evaluate_policy(
            parse_policy({"findings.miscalibrated_labels": "== 0"}, "test"), document, ""
        ).outcomes
    }


def test_an_inverted_label_is_said_as_such_not_as_over_confident() -> None:
    [inverted] = _calibrate(_predictions(4, (-1.0,)))

    assert inverted.verdict == "inverted" and inverted.fit is not None
    assert inverted.fit.slope[2] < 0
    [line] = label_calibration_findings((inverted,))
    assert line.startswith(
        "The probability of label0 is inverted (it falls as the outcome becomes likelier): "
    )


def test_a_patient_s_images_widen_the_slope_s_interval_so_calibrated_labels_stay_unflagged() -> (
    None
):
    flagged = naive = 0
    for seed in range(10):
        rng = np.random.default_rng([seed, 9])
        patients = np.repeat(np.arange(80), 5)  # 5 images of each of 80 patients: alike
        z = np.repeat(rng.normal(0, 2, (80, 5)), 5, axis=0)
        truth = np.repeat(rng.random((80, 5)), 5, axis=0) < 1 / (1 + np.exp(-z))
        names = tuple(f"label{k}" for k in range(5))
        predictions = pd.DataFrame(
            {"label": [_cell(r, names) for r in truth], "patient": patients.astype(str)}
            | {f"p_{n}": 1 / (1 + np.exp(-z[:, k])) for k, n in enumerate(names)}
        )
        by_patient = Resampling.of(predictions, "patient")
        flagged += len(miscalibrated(label_calibration(predictions, names, by_patient, 20, 0)))
        naive += len(miscalibrated(label_calibration(predictions, names, Resampling(), 20, 0)))
    # 50 calibrated labels: about 2.5 flagged at 5%; images taken as independent flag many.
    assert flagged <= 6 < naive


def test_the_module_imports_on_its_own() -> None:
    code = "import auditor.multilabel.calibration, auditor.multilabel.failures"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_page_one_names_the_farthest_three_and_counts_the_rest() -> None:
    calibrations = _calibrate(_predictions(3, (1.0, 4.0, 0.25, 3.0, 1 / 3, 2.5)))
    found = miscalibrated(calibrations)
    lines = label_calibration_findings(calibrations)

    assert len(found) == 5 and label_calibration_unfound(calibrations) == ""
    assert len(lines) == 4 and lines[3] == (
        "2 more label(s) have a calibration slope whose 95% CI excludes 1."
    )
    first = found[0]
    assert first.fit is not None
    slope, low, high = first.fit.slope
    over = "over-confident (too close to 0 and 1)"
    under = "under-confident (too close to the middle)"
    assert lines[0] == (
        f"The probability of {first.label} is {over if slope < 1 else under}: calibration slope "
        f"{slope:.2f} (95% CI {low:.2f}–{high:.2f}; 1 is calibrated), Brier "
        f"score {first.fit.brier:.3f}, ECE {first.ece.value:.3f}, on {first.positives:,} images "
        "with it."
    )
    distances = [abs(np.log(c.fit.slope[0])) for c in found if c.fit]
    assert distances == sorted(distances, reverse=True)


@pytest.fixture(scope="module")
def calibration_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    """A multi-label audit of :func:`tests.labels.scaled_labels` (nodule over-confident,
    pneumothorax under-confident) on 240 images whose labels are drawn from the
    calibrated probability."""
    folder = tmp_path_factory.mktemp("calibration")
    result = run_label_audit(scaled_labels(), make_calibration_dataset(folder / "data"), folder)
    return result, Path(result.stdout.strip().splitlines()[-1])


def test_the_audit_states_each_label_s_calibration_as_recomputed(
    calibration_audit: tuple[Result, Path],
) -> None:
    _, folder = calibration_audit
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = {r["label"]: r for r in metrics["label_calibration"]}
    assert list(rows) == list(LABELS)
    assert [rows[n]["verdict"] for n in LABELS] == [
        "consistent", "over-confident", "under-confident"
    ]  # fmt: skip

    html = (folder / "report.html").read_text()
    page_one = html[html.index('id="label-summary"') : html.index('id="contents"')]
    summary = (folder / "summary.md").read_text()
    for name, words in (("nodule", "over-confident (too close to 0 and 1)"),
                        ("pneumothorax", "under-confident (too close to the middle)")):  # fmt: skip
        p, y = predictions[f"p_{name}"].to_numpy(), _has(predictions, name)
        slope, _ = _slope(p, y)
        row = rows[name]
        assert row["slope"][0] == pytest.approx(slope, rel=1e-3)
        assert row["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-6)
        assert row["ece"]["value"] == pytest.approx(_ece(p, y), abs=1e-9)
        sentence = (
            f"The probability of {name} is {words}: calibration slope {slope:.2f} (95% CI "
            f"{row['slope'][1]:.2f}–{row['slope'][2]:.2f}; 1 is calibrated), Brier score "
            f"{brier_score_loss(y, p):.3f}, ECE {_ece(p, y):.3f}, on {int(y.sum())} images"
        )
        assert sentence in page_one and sentence in summary
    section = html[html.index('id="label-calibration"') :]
    assert "Calibration curves of pneumothorax, nodule, effusion" in section
    assert "over-confident" in html[html.index('id="limitations"') :]


def test_a_policy_on_miscalibrated_labels_fails_and_the_plan_lists_only_what_runs(
    calibration_audit: tuple[Result, Path],
) -> None:
    result, folder = calibration_audit
    metrics = json.loads((folder / "metrics.json").read_text())
    criteria = parse_policy(
        {"findings.miscalibrated_labels": "== 0", "multi_label.highest_ece.ci_low": "<= 0.5"},
        "test",
    )
    outcome = evaluate_policy(criteria, metrics, None)
    [failed] = outcome.failed
    assert failed.criterion.metric == "findings.miscalibrated_labels"
    assert failed.reason.startswith("2 is not == 0")
    highest = max(metrics["label_calibration"], key=lambda r: r["ece"]["value"])
    assert [o.value for o in outcome.outcomes][1] == highest["ece"]["ci_low"]

    planned = [line for line in result.output.splitlines() if line.startswith("auditor: plan: ")]
    stages = [line.split(": ")[2] for line in planned[:-1]]
    assert stages == ["evaluate", "robustness", "concepts", "explain", "trust", "counterfactuals"]
