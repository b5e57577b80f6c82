"""Metadata dependence of a multi-label model (auditor.multilabel.dependence): each label
compared as a binary test among the images with it and those without, every figure
against the single-label path on the same calls, and the chance of a false finding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from auditor.aggregate.dependence import (
    dependence_findings,
    dependence_unfound,
    subgroup_failures,
)
from auditor.clinical import ClinicalSettings, Dependence, GroupRate, metadata_dependence
from auditor.clinical.files import dependence_document, dependence_frame
from auditor.clinical.groups import metadata_groups
from auditor.multilabel.dependence import label_dependence
from auditor.policy import evaluate_policy, parse_policy
from tests.labels import LABELS

COLUMNS = ("site", "age")


def _cell(row: np.ndarray) -> str:
    return ";".join(n for n, on in zip(LABELS, row, strict=True) if on) or "-"


def _predictions(seed: int, site_effect: float, n: int = 600) -> pd.DataFrame:
    """Images with up to three labels, a site and an age; each label is called right 92%
    of the time, and images without effusion at site A are called effusion
    ``site_effect`` more often besides."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 3)) < 0.35
    site = rng.choice(["A", "B"], n)
    calls = truth ^ (rng.random((n, 3)) < 0.08)
    calls[(site == "A") & ~truth[:, 0] & (rng.random(n) < site_effect), 0] = True
    return pd.DataFrame(
        {
            "label": [_cell(r) for r in truth],
            "prediction": [_cell(r) for r in calls],
            "site": site,
            "age": rng.integers(20, 86, n).astype(str),
        }
    )


def _dependence(predictions: pd.DataFrame, settings: ClinicalSettings) -> Dependence | None:
    grouping = metadata_groups(predictions, COLUMNS, settings.max_groups)
    return label_dependence(predictions, grouping, LABELS, settings)


def test_a_dependence_planted_at_one_label_is_found_there_and_nowhere_else() -> None:
    dependence = _dependence(_predictions(0, site_effect=0.35), ClinicalSettings())

    assert dependence is not None and dependence.multi_label and dependence.targets == 3
    assert dependence.n_compared == 2 * len(COLUMNS) * len(LABELS)
    [finding] = dependence.findings()
    assert (finding.column, finding.target, finding.label, finding.high, finding.low) == (
        "site", "effusion", "without effusion", "A", "B",
    )  # fmt: skip
    assert finding.ci_low > 0 and finding.p_adjusted <= 0.05
    [sentence] = dependence_findings(dependence)
    assert sentence.startswith(
        "Predictions depend on site: images without effusion are called effusion "
        f"{100 * finding.difference:.1f} points more often with site = A than with site = B"
    )
    assert "Bonferroni across 3 labels) across 12 comparisons" in sentence
    [failure] = subgroup_failures(dependence)
    assert failure.startswith("Specificity for effusion falls to ")
    assert failure.endswith("(images without effusion).")
    assert dependence_unfound(dependence, True) == ""


def test_every_figure_equals_the_single_label_path_on_one_labels_calls() -> None:
    # Label k read as a single-label model of two classes: "without k" and "with k".
    predictions = _predictions(1, site_effect=0.2)
    settings = ClinicalSettings(permutations=20_000)
    dependence = _dependence(predictions, settings)
    assert dependence is not None
    for name in LABELS:
        has = predictions["label"].str.split(";").map(lambda cell, n=name: n in cell)
        called = predictions["prediction"].str.split(";").map(lambda cell, n=name: n in cell)
        single = predictions.assign(
            label=np.where(has, f"with {name}", f"without {name}"),
            **{f"p_with {name}": called.astype(float)},
        )
        grouping = metadata_groups(single, COLUMNS, settings.max_groups)
        classes = (f"without {name}", f"with {name}")
        reference = metadata_dependence(single, grouping, classes, settings)
        assert reference is not None
        rates = [r for r in dependence.rates if r.target == name]

        def figures(r: GroupRate) -> tuple[object, ...]:
            return (r.column, r.label, r.value, r.n, r.positive, r.ci_low, r.ci_high)

        assert [figures(r) for r in rates] == [figures(r) for r in reference.rates]
        rows = [c for c in dependence.columns if c.target == name]
        for ours, theirs in zip(rows, reference.columns, strict=True):
            assert (ours.column, ours.label, ours.high, ours.low) == (
                theirs.column, theirs.label, theirs.high, theirs.low,
            )  # fmt: skip
            assert (ours.difference, ours.ci_low, ours.ci_high) == (
                theirs.difference, theirs.ci_low, theirs.ci_high,
            )  # fmt: skip
            # Other permutations (another stream), the same test: within Monte Carlo error.
            assert ours.p_value == pytest.approx(theirs.p_value, abs=0.02)
            bonferroni = min(1.0, 3 * theirs.p_adjusted)
            assert ours.p_adjusted == pytest.approx(bonferroni, abs=0.06)


def test_a_model_blind_to_the_metadata_gives_no_finding_in_19_of_20_seeds() -> None:
    found = [
        _dependence(_predictions(seed, site_effect=0.0), ClinicalSettings(seed=seed))
        for seed in range(20)
    ]
    assert all(d is not None and d.n_compared == 12 for d in found)
    findings = [bool(d.findings()) for d in found if d is not None]
    assert sum(findings) <= 1, findings


def test_only_labels_with_a_comparison_count_in_the_bonferroni_factor() -> None:
    # No image has pneumothorax, so its 200 images without it split about 100 per site:
    # the only groups of 60 images (min-group-size). Every other label is too few.
    predictions = _predictions(2, site_effect=0.35, n=200)
    predictions["label"] = predictions["label"].str.replace(";pneumothorax", "")
    predictions["label"] = predictions["label"].str.replace("pneumothorax", "-")
    dependence = _dependence(predictions, ClinicalSettings(min_group_size=60))

    assert dependence is not None
    [compared] = [c for c in dependence.columns if c.label is not None]
    assert (compared.column, compared.target, compared.label) == (
        "site", "pneumothorax", "without pneumothorax",
    )  # fmt: skip
    assert dependence.targets == 1 and compared.p_adjusted == compared.p_value, "one comparison"
    too_few = [(c.column, c.target) for c in dependence.columns if c.label is None]
    assert too_few == [
        ("site", "effusion"), ("age", "effusion"), ("site", "nodule"), ("age", "nodule"),
        ("age", "pneumothorax"),
    ]  # fmt: skip


def test_nothing_large_enough_to_compare_is_said_as_not_judged() -> None:
    predictions = _predictions(3, site_effect=0.35, n=40)
    dependence = _dependence(predictions, ClinicalSettings(min_group_size=50))

    assert dependence is not None and dependence.n_compared == 0 and dependence.targets == 0
    assert dependence_unfound(dependence, True) == (
        "Metadata dependence not judged: no metadata column has two values of at least 50 "
        "images among images alike in a label (min-group-size)."
    )
    assert dependence_unfound(None, True) == (
        "Metadata dependence not assessed: it needs metadata columns."
    )


def test_a_scanner_mark_read_as_a_label_is_on_page_one_as_recomputed(scanner_audit: Path) -> None:
    predictions = pd.read_csv(scanner_audit / "predictions.csv", keep_default_na=False)
    metrics = json.loads((scanner_audit / "metrics.json").read_text())
    found = metrics["metadata_dependence"]
    assert found["positive_class"] is None and found["targets"] == len(LABELS)
    [finding] = [c for c in found["columns"] if c["finding"]]
    assert (finding["column"], finding["target"], finding["label"]) == (
        "scanner", "effusion", "without effusion",
    )  # fmt: skip

    # Recomputed from predictions.csv: the share of images without effusion called it.
    without = predictions[~predictions["label"].str.split(";").map(lambda c: "effusion" in c)]
    called = without["prediction"].str.split(";").map(lambda c: "effusion" in c)
    share = called.groupby(without["scanner"]).agg(["mean", "sum", "size"])
    assert share.loc["X", "mean"] == 1.0 and share.loc["Y", "mean"] == 0.0, "the mark decides"
    difference = 100 * (share.loc["X", "mean"] - share.loc["Y", "mean"])
    sentence = (
        f"Predictions depend on scanner: images without effusion are called effusion "
        f"{difference:.1f} points more often with scanner = X than with scanner = Y"
    )
    kept, n = int(share.loc["X", "size"] - share.loc["X", "sum"]), int(share.loc["X", "size"])
    failure = f"Specificity for effusion falls to {kept / n:.1%} with scanner = X (95% CI "
    html = (scanner_audit / "report.html").read_text()
    page_one = html[html.index('id="label-summary"') : html.index('id="contents"')]
    assert sentence in page_one and failure in page_one
    assert sentence in (scanner_audit / "summary.md").read_text()
    assert f"; {kept} of {n}), against" in page_one

    # dependence.csv: every (label, images with or without it, value) group recounted.
    rates = pd.read_csv(scanner_audit / "dependence.csv", keep_default_na=False)
    for name in LABELS:
        has = predictions["label"].str.split(";").map(lambda c, n=name: n in c)
        calls = predictions["prediction"].str.split(";").map(lambda c, n=name: n in c)
        for column in ("site", "scanner"):
            recount = calls.groupby([has, predictions[column]]).agg(["size", "sum"])
            ours = rates[(rates["target"] == name) & (rates["column"] == column)]
            assert {(r.label, r.value): (r.n, r.positive) for r in ours.itertuples()} == {
                (f"{'with' if h else 'without'} {name}", v): (int(n), int(s))
                for (h, v), (n, s) in recount.iterrows()
            }
    criteria = parse_policy({"findings.metadata_dependence": "== 0"}, "test")
    [failed] = evaluate_policy(criteria, metrics, None).failed
    assert failed.reason.startswith("1 is not == 0")
    # Not judged (too few permutations to reach the level): not measured, never a pass.
    found["judged"] = False
    [failed] = evaluate_policy(criteria, metrics, None).failed
    assert "not measured" in failed.reason


def test_too_few_permutations_to_reach_the_level_is_said_and_not_counted() -> None:
    # 3 labels x 1 / (100 + 1) = 0.0297 > 0.02: no adjusted p-value can reach the level,
    # however large the dependence.
    settings = ClinicalSettings(permutations=100, dependence_alpha=0.02)
    dependence = _dependence(_predictions(0, site_effect=0.35), settings)

    assert dependence is not None and dependence.n_compared == 12
    assert dependence.p_floor == pytest.approx(3 / 101) and not dependence.judged
    assert not dependence.findings()
    assert dependence_unfound(dependence, True) == (
        "Metadata dependence not judged: with 100 permutations times the 3 labels compared, "
        "no adjusted p-value can be below 0.0297, above dependence-alpha (0.02); set "
        "permutations to at least 150."
    )
    assert dependence_document(dependence)["judged"] is False  # type: ignore[index]


def test_columns_not_broken_down_are_said_and_dependence_csv_keeps_its_header() -> None:
    predictions = _predictions(3, site_effect=0.35, n=80)
    predictions["site"] = np.resize(["A", "B", "C"], len(predictions))
    settings = ClinicalSettings(max_groups=2)
    grouping = metadata_groups(predictions, ("site",), settings.max_groups)
    dependence = label_dependence(predictions, grouping, LABELS, settings)

    assert dependence is not None and dependence.skipped and not dependence.columns
    assert dependence_unfound(dependence, True) == (
        "Metadata dependence not judged: 1 column not broken down (see the section)."
    )
    assert dependence_frame(dependence).columns.tolist() == [
        f.name for f in dataclasses.fields(GroupRate)
    ]


def test_a_finding_names_another_label_whose_prevalence_differs_with_the_column() -> None:
    # Site plays no part in the calls: nodule is also called on 40% of the images with
    # effusion, and effusion is far more common at site A (70%) than at B (10%).
    rng = np.random.default_rng(6)
    n = 600
    site = rng.choice(["A", "B"], n)
    truth = np.stack(
        [rng.random(n) < np.where(site == "A", 0.7, 0.1), rng.random(n) < 0.3, np.zeros(n, bool)],
        axis=1,
    )
    calls = truth.copy()
    calls[:, 1] |= truth[:, 0] & (rng.random(n) < 0.4)
    predictions = pd.DataFrame(
        {
            "label": [_cell(r) for r in truth],
            "prediction": [_cell(r) for r in calls],
            "site": site,
            "age": rng.integers(20, 86, n).astype(str),
        }
    )
    settings = ClinicalSettings()
    grouping = metadata_groups(predictions, COLUMNS, settings.max_groups)
    dependence = label_dependence(predictions, grouping, LABELS, settings)
    assert dependence is not None
    [finding] = dependence.findings()
    assert (finding.column, finding.target, finding.label) == ("site", "nodule", "without nodule")

    inputs = SimpleNamespace(
        clinical=SimpleNamespace(links=(), grouping=grouping),
        evaluation=SimpleNamespace(predictions=predictions),
        dataset=SimpleNamespace(classes=LABELS),
    )
    [sentence] = dependence_findings(dependence, inputs)  # type: ignore[arg-type]
    without = ~truth[:, 1]
    a, b = without & (site == "A"), without & (site == "B")
    expected = (
        f"Among the images without nodule, effusion is present in {truth[a, 0].mean():.1%} "
        f"with site = A (n = {a.sum()}) against {truth[b, 0].mean():.1%} with site = B "
        f"(n = {b.sum()}): the calls of nodule may follow effusion rather than site."
    )
    assert sentence.endswith(expected)
    assert dependence_findings(dependence)[0] == sentence.removesuffix(" " + expected)
