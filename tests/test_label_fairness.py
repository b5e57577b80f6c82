"""Subgroups of a multi-label model, label by label (auditor.multilabel.fairness): each
label's figures equal the single-label path's on that label's calls, a sensitivity lost
at one site is found in that label's disparities alone, and the audit with a scanner
that the model reads as effusion (tests.labels) says so in its files and its report, as
recounted from its ``predictions.csv``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditor.aggregate.label_subgroups import lowest_group
from auditor.clinical.fairness import fairness
from auditor.clinical.groups import metadata_groups
from auditor.clinical.rates import wilson_rate
from auditor.clinical.settings import ClinicalSettings
from auditor.multilabel.evaluation import label_matrix
from auditor.multilabel.fairness import label_fairness
from auditor.policy import evaluate_policy, parse_policy
from auditor.resample import Resampling
from tests.labels import LABELS

NAMES = ("a", "b")


def _predictions(seed: int, n: int = 240, lost_at_b: float = 0.0) -> pd.DataFrame:
    """``n`` images at sites A and B, each label present with probability 0.4 and called
    when its probability reaches 0.5; label ``a``'s probability falls below 0.5 on a share
    ``lost_at_b`` of the site-B images that have it (a missed finding there alone)."""
    rng = np.random.default_rng(seed)
    site = np.where(np.arange(n) % 2 == 0, "A", "B")
    has = rng.random((n, 2)) < 0.4
    p = np.clip(np.where(has, 0.8, 0.2) + rng.normal(0, 0.2, (n, 2)), 0.01, 0.99)
    lost = has[:, 0] & (site == "B") & (rng.random(n) < lost_at_b)
    p[lost, 0] = rng.uniform(0.05, 0.45, int(lost.sum()))

    def cells(rows: np.ndarray) -> list[str]:
        return [";".join(x for x, on in zip(NAMES, r, strict=True) if on) or "-" for r in rows]

    return pd.DataFrame(
        {
            "label": cells(has),
            "prediction": cells(p >= 0.5),
            "p_a": p[:, 0],
            "p_b": p[:, 1],
            "site": site,
        }
    )


def _fairness(frame: pd.DataFrame, settings: ClinicalSettings) -> tuple:  # type: ignore[type-arg]
    grouping = metadata_groups(frame, ("site",), settings.max_groups)
    return label_fairness(frame, grouping, NAMES, settings, 400, Resampling())


def test_each_label_s_figures_equal_the_single_label_path_on_its_calls() -> None:
    frame, settings = _predictions(0), ClinicalSettings()
    found = _fairness(frame, settings)

    has = label_matrix(frame["label"], NAMES)
    for j, name in enumerate(NAMES):
        single = pd.DataFrame(
            {
                "label": np.where(has[:, j], name, "other"),
                f"p_{name}": frame[f"p_{name}"],
                "site": frame["site"],
            }
        )
        grouping = metadata_groups(single, ("site",), settings.max_groups)
        expected = fairness(single, grouping, name, settings, 400, Resampling(), 0.5)
        assert expected is not None
        label = found[j]
        assert label.positive_class == name
        # the highest ECE is ranked by its interval: from the label's own draws
        assert {k: v for k, v in label.lowest.items() if k[1] != "ece"} == {
            k: v for k, v in expected.lowest.items() if k[1] != "ece"
        }
        for got, want in zip(label.groups, expected.groups, strict=True):
            assert (got.column, got.value, got.n, got.too_few) == (
                want.column, want.value, want.n, want.too_few
            )  # fmt: skip
            for measure in ("prevalence", "sensitivity", "specificity", "ppv", "npv", "accuracy"):
                assert getattr(got, measure) == getattr(want, measure)  # Wilson: exact
            assert got.auc is not None and want.auc is not None
            assert got.auc.value == want.auc.value
        got_values = [(d.column, d.metric, d.value) for d in label.disparities]
        assert got_values == [(d.column, d.metric, d.value) for d in expected.disparities]


def test_a_sensitivity_lost_at_one_site_is_that_label_s_disparity_alone() -> None:
    found = _fairness(_predictions(1, lost_at_b=0.6), ClinicalSettings())

    def opportunity(j: int) -> tuple[float, float, float]:
        (d,) = [d for d in found[j].disparities if d.metric == "equal opportunity difference"]
        return d.value, d.ci_low, d.ci_high

    a, b = opportunity(0), opportunity(1)
    assert a[1] > 0.3, a  # a's interval lies far above 0
    assert b[0] < 0.15 and b[1] < 0.05, b  # b's gap is noise: its interval reaches 0
    assert found[0].lowest[("site", "sensitivity")] == "B"
    rows = {g.value: g for g in found[0].groups}
    assert rows["B"].sensitivity.value < rows["A"].sensitivity.value - 0.3


def test_without_metadata_no_label_is_compared_and_each_label_draws_its_own_stream() -> None:
    frame, settings = _predictions(2), ClinicalSettings()
    empty = metadata_groups(frame, (), settings.max_groups)
    assert label_fairness(frame, empty, NAMES, settings, 100, Resampling()) == ()

    # The same calls under two names: equal points, intervals from different draws.
    twin = frame.assign(p_b=frame["p_a"], prediction=frame["prediction"].str.contains("a"))
    twin["label"] = [
        ";".join(n for n in NAMES if "a" in cell.split(";")) or "-" for cell in frame["label"]
    ]
    twin["prediction"] = np.where(twin["prediction"], "a;b", "-")
    a, b = _fairness(twin, settings)
    assert [d.value for d in a.disparities] == [d.value for d in b.disparities]
    assert [d.ci_high for d in a.disparities] != [d.ci_high for d in b.disparities]


@pytest.fixture(scope="module")
def scanner_files(scanner_audit: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:  # type: ignore[type-arg]
    predictions = pd.read_csv(scanner_audit / "predictions.csv", keep_default_na=False)
    subgroups = pd.read_csv(scanner_audit / "subgroups.csv", keep_default_na=False)
    metrics = json.loads((scanner_audit / "metrics.json").read_text())
    return predictions, subgroups, metrics


def test_the_scanner_read_as_effusion_is_effusion_s_disparity_as_recounted(
    scanner_files: tuple[pd.DataFrame, pd.DataFrame, dict],  # type: ignore[type-arg]
) -> None:
    predictions, subgroups, metrics = scanner_files
    has = label_matrix(predictions["label"], LABELS)
    calls = label_matrix(predictions["prediction"], LABELS)

    assert list(subgroups.columns[:3]) == ["label", "column", "value"]
    for row in subgroups.itertuples():
        member = (predictions[row.column].astype(str) == row.value).to_numpy()
        j = LABELS.index(row.label)
        negatives = member & ~has[:, j]
        positives = member & has[:, j]
        assert row.n == member.sum()
        assert row.specificity_hits == (negatives & ~calls[:, j]).sum()
        assert row.specificity_n == negatives.sum()
        assert row.sensitivity_hits == (positives & calls[:, j]).sum()

    by_label = {f["positive_class"]: f for f in metrics["label_fairness"]}
    assert list(by_label) == list(LABELS)
    odds = {
        label: next(
            d["value"]
            for d in f["disparities"]
            if d["column"] == "scanner" and d["metric"] == "equalized odds difference"
        )
        for label, f in by_label.items()
    }
    scanner = subgroups[(subgroups["label"] == "effusion") & (subgroups["column"] == "scanner")]
    specificity = dict(zip(scanner["value"], scanner["specificity"], strict=True))
    assert odds["effusion"] == pytest.approx(specificity["Y"] - specificity["X"]) == 1.0
    assert odds["nodule"] < 0.2 and odds["pneumothorax"] < 0.2
    assert by_label["effusion"]["lowest"]


def test_the_report_and_the_policy_read_the_labels_disparities(scanner_audit: Path) -> None:
    metrics = json.loads((scanner_audit / "metrics.json").read_text())
    html = (scanner_audit / "report.html").read_text()
    section = html[html.index('id="label-subgroups"') : html.index('id="dependence"')]
    first = section.index("<td", section.index("Lowest specificity"))
    assert section[first:].split("</td>")[0].endswith(">effusion")  # the largest gap first
    assert 'id="label-subgroups-detail"' in html

    criteria = parse_policy({"fairness.equalized_odds_difference.value": "<= 0.5"}, "test")
    (outcome,) = evaluate_policy(criteria, metrics, "").outcomes
    assert outcome.value == 1.0 and not outcome.passed


def test_a_site_without_the_label_gives_no_gap_in_the_rate_it_cannot_measure() -> None:
    frame = _predictions(3)
    absent = frame["site"] == "B"
    frame.loc[absent, "label"] = frame.loc[absent, "label"].str.replace("a", "").str.strip(";")
    frame.loc[frame["label"] == "", "label"] = "-"
    (a, b) = _fairness(frame, ClinicalSettings())

    disparities = {d.metric: d for d in a.disparities}
    # fairlearn counts B's sensitivity (0 of 0) as 0: a false gap of A's sensitivity.
    assert np.isnan(disparities["equal opportunity difference"].value)
    fpr = {g.value: 1 - g.specificity.value for g in a.groups}
    assert disparities["equalized odds difference"].value == pytest.approx(abs(fpr["A"] - fpr["B"]))
    assert lowest_group(a, "site", "sensitivity") == "only A measured"
    assert not np.isnan({d.metric: d for d in b.disparities}["equal opportunity difference"].value)


def test_the_lowest_group_is_named_with_its_rate_or_said_equal() -> None:
    found = _fairness(_predictions(1, lost_at_b=0.6), ClinicalSettings())
    rates = {g.value: g.sensitivity.value for g in found[0].groups}
    assert lowest_group(found[0], "site", "sensitivity") == f"B: {rates['B']:.1%}"

    frame = _predictions(4)
    frame["p_a"] = np.where(label_matrix(frame["label"], NAMES)[:, 0], 0.9, 0.1)
    frame["prediction"] = [
        ";".join(n for n, p in (("a", pa), ("b", pb)) if p >= 0.5) or "-"
        for pa, pb in zip(frame["p_a"], frame["p_b"], strict=True)
    ]
    (a, _) = _fairness(frame, ClinicalSettings())
    assert lowest_group(a, "site", "sensitivity") == "equal (100.0%)"


def test_with_a_patient_column_the_labels_rates_are_resampled_by_patient(label_audit: Path) -> None:
    subgroups = pd.read_csv(label_audit / "subgroups.csv", keep_default_na=False)
    html = (label_audit / "report.html").read_text()
    section = html[html.index('id="label-subgroups"') :]

    assert "95% intervals (bootstrap over patient)" in section
    assert set(subgroups["label"]) == set(LABELS) and "patient" not in set(subgroups["column"])
    for row in subgroups.itertuples():  # never narrower than Wilson's over images
        wilson = wilson_rate(row.sensitivity_hits, row.sensitivity_n)
        if row.sensitivity_n:
            assert row.sensitivity_ci_low <= wilson.ci_low + 1e-12
