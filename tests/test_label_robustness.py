"""Robustness of a multi-label model (auditor.robustness with labels): subset accuracy,
called sets that change and every label's sensitivity and specificity against the
clean calls, on hand-built calls with a known answer, and the audit with a known answer
(tests.labels) as recomputed from its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditor.resample import Resampling
from auditor.robustness import Perturbed, RobustnessSettings, robustness_summary, variants
from tests.labels import LABELS

NAMES = ("a", "b")


def _perturbed(clean: pd.DataFrame, changed: dict[tuple[str, float], list[str]]) -> Perturbed:
    """Every variant's calls: the clean ones, or ``changed``'s cells for a variant."""
    settings = RobustnessSettings()
    frames = []
    for variant in variants(settings):
        key = (variant.perturbation.name, variant.severity)
        frames.append(pd.DataFrame({
            "index": clean["index"], "perturbation": key[0], "severity": key[1],
            "prediction": changed.get(key, clean["prediction"].tolist()),
            "confidence": np.nan, "p_positive": np.nan,
        }))  # fmt: skip
    frame = pd.concat(frames, ignore_index=True)
    return Perturbed(frame, len(clean), 0, None, 0.0, len(frame), settings)


def _clean(n: int = 40) -> pd.DataFrame:
    """Half the images have a, a quarter b; every call right."""
    cells = ["a;b" if i % 4 == 0 else "a" if i % 2 == 0 else "-" for i in range(n)]
    return pd.DataFrame({"index": range(n), "label": cells, "prediction": cells})


def test_a_label_no_longer_called_under_one_variant_is_that_variant_s_finding() -> None:
    clean = _clean()
    lost = [c.replace("a;b", "b").replace("a", "-") for c in clean["prediction"]]
    broken = ["" if i == 1 else c for i, c in enumerate(clean["prediction"])]  # no output
    robustness = robustness_summary(
        _perturbed(clean, {("brightness", 0.6): lost, ("rotation", 15.0): broken}),
        clean, None, 0.5, Resampling(), 200, 10, NAMES,
    )  # fmt: skip

    rows = {(r.perturbation, r.severity): r for r in robustness.rows}
    dark = rows[("brightness", 0.6)]
    a, b = dark.labels
    assert (a.label, a.sensitivity_change.value, a.worse) == ("a", -1.0, (20, 0))
    assert a.specificity_change.value == 0 and b.sensitivity_change.value == 0
    assert dark.accuracy_change.value == -0.5 and dark.flips.value == 0.5
    assert dark.fragile == ("accuracy", "sensitivity of a")
    assert dark.change("sensitivity of a") == (a.sensitivity_change, 20)
    # An image without a finite output under a variant: every clean call of it changed.
    rotated = rows[("rotation", 15.0)]
    assert rotated.labels[0].specificity_change.value == pytest.approx(-1 / 20)
    assert rotated.flips.value == pytest.approx(1 / 40) and not rotated.fragile
    calm = [r for key, r in rows.items() if key not in (("brightness", 0.6), ("rotation", 15.0))]
    assert all(not r.fragile and r.flips.value == 0 for r in calm)
    assert [r.perturbation for r in robustness.fragile()] == ["brightness"]
    assert np.isnan(dark.confidence_change.value), "a multi-label model has no confidence"


def test_a_non_finite_output_is_never_right_so_never_an_improvement() -> None:
    clean = _clean()
    clean.loc[3, "prediction"] = "a"  # a false call of a, on an image without a
    broken = ["" if i in (1, 3) else c for i, c in enumerate(clean["prediction"])]
    robustness = robustness_summary(
        _perturbed(clean, {("rotation", 15.0): broken}), clean, None, 0.5, Resampling(), 50,
        10, NAMES,
    )  # fmt: skip

    [rotated] = [r for r in robustness.rows if (r.perturbation, r.severity) == ("rotation", 15.0)]
    a = rotated.labels[0]
    # x1 (no a, rightly not called) is now wrong; x3 (no a, wrongly called) stays wrong.
    assert a.specificity_change.value == pytest.approx(-1 / 20) and a.worse == (0, 1)
    assert a.sensitivity_change.value == 0
    assert rotated.accuracy_change.value == pytest.approx(-1 / 40)  # x1 only: x3 was wrong


def test_a_single_label_non_finite_output_is_never_an_improvement() -> None:
    truth = np.array(["high"] * 10 + ["low"] * 10)
    p = np.r_[np.full(9, 0.9), 0.1, np.full(9, 0.1), 0.9]  # x9 missed, x19 a false call
    clean = pd.DataFrame({
        "index": range(20), "label": truth, "prediction": np.where(p >= 0.5, "high", "low"),
        "confidence": np.maximum(p, 1 - p), "p_high": p,
    })  # fmt: skip
    perturbed = _perturbed(clean, {})
    noisy = (perturbed.frame["perturbation"] == "rotation") & (perturbed.frame["severity"] == 15)
    perturbed.frame["p_positive"] = np.tile(p, len(perturbed.frame) // 20)
    wrong = noisy & perturbed.frame["index"].isin([9, 19])
    perturbed.frame.loc[wrong, ["prediction", "p_positive"]] = ["", np.nan]
    robustness = robustness_summary(perturbed, clean, "high", 0.5, Resampling(), 50, 10)

    [rotated] = [r for r in robustness.rows if (r.perturbation, r.severity) == ("rotation", 15.0)]
    assert rotated.sensitivity_change is not None and rotated.specificity_change is not None
    assert rotated.sensitivity_change.value == 0 and rotated.specificity_change.value == 0
    assert rotated.accuracy_change.value == 0


def _has(cells: pd.Series, name: str) -> np.ndarray:
    return cells.astype(str).str.split(";").map(lambda c: name in c).to_numpy(dtype=bool)


def test_the_audit_s_label_changes_equal_a_recount_of_its_files(label_audit: Path) -> None:
    clean = pd.read_csv(label_audit / "predictions.csv", keep_default_na=False)
    perturbed = pd.read_csv(label_audit / "robustness_predictions.csv", keep_default_na=False)
    found = pd.read_csv(label_audit / "robustness_labels.csv", keep_default_na=False)
    metrics = json.loads((label_audit / "metrics.json").read_text())["robustness"]

    assert len(found) == len(metrics["rows"]) * len(LABELS) == len(metrics["labels"])
    clean = clean.set_index("index")
    for (name, severity), rows in perturbed.groupby(["perturbation", "severity"]):
        base = clean.loc[rows["index"]]
        for label in LABELS:
            has, before = _has(base["label"], label), _has(base["prediction"], label)
            after = _has(rows["prediction"], label)
            mine = found[(found["perturbation"] == name) & (found["severity"] == severity)
                         & (found["label"] == label)].iloc[0]  # fmt: skip
            sensitivity = (after[has].astype(int) - before[has]).mean()
            assert mine["sensitivity_change"] == pytest.approx(sensitivity)
            assert mine["sensitivity_worse"] == int((before & ~after & has).sum())
            specificity = (before[~has].astype(int) - after[~has]).mean()
            assert mine["specificity_change"] == pytest.approx(specificity)
            assert mine["specificity_worse"] == int((~before & after & ~has).sum())
        subset = (rows["prediction"].to_numpy() == base["label"].to_numpy()).mean()
        row = next(
            r for r in metrics["rows"] if (r["perturbation"], r["severity"]) == (name, severity)
        )
        assert row["accuracy"] == pytest.approx(subset)

    html = (label_audit / "report.html").read_text()
    page_one = html[html.index('id="label-summary"') : html.index('id="contents"')]
    assert ("<strong>Robustness.</strong> Fragile under" in page_one) == bool(metrics["fragile"])
    assert ("not fragile under any" in page_one) == (not metrics["fragile"])
