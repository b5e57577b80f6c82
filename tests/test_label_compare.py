"""Comparing audits of a multi-label model: subset and label accuracy, McNemar's test on
whole sets of labels, each label's sensitivity and specificity (Bonferroni-adjusted), and
the drift of each label's calls and probability.

A chain of two audits in one history: the model with a known answer (tests.labels), then
the same model with nodule's bias lowered so that it misses nodule on every image; and
tables of calls built here, with a negative control (an audit compared with itself).
"""

from __future__ import annotations

import dataclasses
import json
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import Result
from scipy.stats import fisher_exact, wilcoxon

from auditor.aggregate.changes import comparison_view
from auditor.compare import COMPARED, compare_audits, comparison_document
from auditor.compare.audits import Audit
from auditor.compare.drift import label_prediction_drift
from auditor.errors import ConfigError
from auditor.history.settings import PeriodicSettings
from auditor.label_criteria import label_numbers, unnamed_label_reason
from auditor.multilabel.evaluation import label_matrix, label_set
from auditor.policy import evaluate_policy, parse_policy
from tests.helpers import invoke, save_torchscript
from tests.labels import LABELS, ChannelLabels, make_label_dataset

POLICY = """
[policy]
"compare.label_regressions" = "== 0"
"compare.subset_accuracy.diff.ci_high" = ">= -0.02"
"compare.label.effusion.sensitivity.diff.ci_high" = ">= -0.05"
"label.pneumothorax.sensitivity.ci_low" = ">= 0.5"
"""


def _missing_nodule() -> ChannelLabels:
    """:class:`ChannelLabels` with nodule's bias lowered from -6 to -7.5: an image's
    square (mean about 0.57) no longer reaches nodule's threshold."""
    model = ChannelLabels()
    with torch.no_grad():
        model.classifier.bias[LABELS.index("nodule")] = -7.5
    return model


def _run(config: Path, model: Path, data: Path, out: Path) -> Result:
    return invoke(
        "run", "--config", str(config), "--model", str(model), "--data", str(data),
        "--out", str(out), "--model-name", "chest", "--explain-samples", "1",
        "--methods", "saliency", "--format", "html,md", "--device", "cpu", "--seed", "0",
    )  # fmt: skip


@pytest.fixture(scope="module")
def label_chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("label-chain")
    config = root / "audit.toml"
    config.write_text(POLICY, encoding="utf-8")
    data = make_label_dataset(root / "data", n=64, scanner=True)
    models = [
        save_torchscript(ChannelLabels(), root / "labels.pt"),
        save_torchscript(_missing_nodule(), root / "weaker.pt"),
    ]
    runs = [_run(config, model, data, root / "reports") for model in models]
    for run in runs:
        assert run.exit_code in (0, 3), run.output + (run.stderr or "")
    folders = [Path(r.stdout.strip().splitlines()[-1]) for r in runs]
    return {"runs": runs, "folders": folders, "out": root / "reports"}


def _json(folder: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((folder / name).read_text(encoding="utf-8")))


def _rates(folder: Path) -> dict[tuple[str, str], float]:
    """Each label's sensitivity and specificity, recounted from ``predictions.csv``."""
    frame = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    has, called = (label_matrix(frame[c], LABELS) for c in ("label", "prediction"))
    found = {}
    for k, name in enumerate(LABELS):
        found[name, "sensitivity"] = float(called[has[:, k], k].mean())
        found[name, "specificity"] = float((~called[~has[:, k], k]).mean())
    return found


def test_a_first_multi_label_audit_has_nothing_to_compare(label_chain: dict[str, Any]) -> None:
    first = label_chain["folders"][0]
    policy = _json(first, "policy.json")

    assert label_chain["runs"][0].exit_code == 0
    assert not (first / "comparison.json").exists()
    compared = [c for c in policy["criteria"] if c["metric"].startswith("compare.")]
    assert len(compared) == 3 and all("no previous audit" in c["reason"] for c in compared)
    [named] = [c for c in policy["criteria"] if c["metric"].startswith("label.")]
    sensitivity = _json(first, "metrics.json")["multi_label"]["labels"][2]["sensitivity"]
    assert named["passed"] and named["value"] == sensitivity["ci_low"] >= 0.5


def test_a_label_the_new_model_misses_is_a_label_regression_with_figures_from_the_files(
    label_chain: dict[str, Any],
) -> None:
    first, second = label_chain["folders"]
    comparison = _json(second, "comparison.json")
    before, after = _rates(first), _rates(second)
    rows = {(r["label"], r["name"]): r for r in comparison["labels"]}

    assert comparison["multi_label"] and comparison["paired"]
    assert comparison["shared_images"] == 64
    assert set(rows) == set(before)
    for key, row in rows.items():
        assert (row["before"], row["after"]) == pytest.approx((before[key], after[key]))
        assert row["n_before"] == row["n_after"] == 32  # half the images have each label
    fell = [key for key, row in rows.items() if row["worse"]]
    assert fell == [("nodule", "sensitivity")]
    assert (before["nodule", "sensitivity"], after["nodule", "sensitivity"]) == (1.0, 0.0)
    for key, row in rows.items():
        if key != ("nodule", "sensitivity"):
            assert row["ci_low"] <= 0 <= row["ci_high"], key
    subset = comparison["metrics"][0]
    correct = [pd.read_csv(f / "predictions.csv")["correct"].mean() for f in (first, second)]
    assert subset["name"] == "subset_accuracy" and subset["worse"]
    assert (subset["before"], subset["after"]) == pytest.approx(tuple(correct))
    assert comparison["gate"]["compare.label_regressions"] == 1


def test_the_regression_is_on_page_one_and_fails_the_policy(label_chain: dict[str, Any]) -> None:
    second = label_chain["folders"][1]
    comparison = _json(second, "comparison.json")
    nodule = next(r for r in comparison["labels"] if r["label"] == "nodule" and r["worse"])
    summary = (second / "summary.md").read_text(encoding="utf-8")
    html = (second / "report.html").read_text(encoding="utf-8")
    failed = {c["metric"] for c in _json(second, "policy.json")["criteria"] if not c["passed"]}

    assert label_chain["runs"][1].exit_code == 3
    assert failed == {"compare.label_regressions", "compare.subset_accuracy.diff.ci_high"}
    line = next(x for x in summary.splitlines() if "Sensitivity for nodule fell" in x)
    assert line.startswith("- **Since the previous audit.** Sensitivity for nodule fell from ")
    interval = "family-wise 95% CI " + f"{nodule['ci_low']:+.3f}".replace("-", "−")
    assert f"1.000 to 0.000 (−1.000, {interval}" in line
    assert "on the 32 images with nodule both audits scored" in line
    assert "the intervals are Bonferroni-adjusted over the 6 label rates compared" in line
    assert "Since the previous audit." in html and 'id="changes"' in html
    assert "sensitivity of nodule" in html and "Label rate" in html
    assert f'<td class="text">{COMPARED["compare.label_regressions"]}</td>' in unescape(html)
    meaning = "effusion's sensitivity change, upper family-wise 95% bound (comparison with the"
    assert f'<td class="text">{meaning} previous audit)</td>' in unescape(html)


def test_the_calls_of_the_missed_label_are_drift(label_chain: dict[str, Any]) -> None:
    first, second = label_chain["folders"]
    comparison = _json(second, "comparison.json")
    calls, probability = comparison["drift"]["predictions"]
    shares = [
        label_matrix(pd.read_csv(f / "predictions.csv", keep_default_na=False)["prediction"],
                     LABELS)[:, LABELS.index("nodule")].mean()
        for f in (first, second)
    ]  # fmt: skip

    assert calls["name"] == "share called nodule" and calls["moved"]
    assert (calls["before"], calls["after"]) == pytest.approx((shares[0], shares[1]))
    assert probability["name"] == "probability of nodule" and probability["moved"]


def test_auditor_compare_writes_a_multi_label_comparison(
    label_chain: dict[str, Any], tmp_path: Path
) -> None:
    first, second = label_chain["folders"]
    done = invoke("compare", str(first), str(second), "--out", str(tmp_path), "--bootstrap", "200")
    assert done.exit_code == 0, done.output + done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    comparison = _json(folder, "comparison.json")
    html = (folder / "comparison.html").read_text(encoding="utf-8")

    assert comparison["schema_version"] == 3 and comparison["multi_label"]
    assert [(r["label"], r["name"]) for r in comparison["labels"] if r["worse"]] == [
        ("nodule", "sensitivity")
    ]
    assert "Sensitivity for nodule fell from 1.000 to 0.000" in html
    assert "probability of nodule" in html and (folder / "comparison.pdf").is_file()


def _audit(name: str, truth: np.ndarray, called: np.ndarray) -> Audit:
    """A multi-label audit of three labels (``a``, ``b``, ``c``) with these calls."""
    labels = ("a", "b", "c")
    n = len(truth)
    probability = np.where(called, 0.8, 0.2)
    frame = pd.DataFrame({
        "index": np.arange(n), "path": [f"x{k}.png" for k in range(n)],
        "label": [label_set(r, labels) for r in truth],
        "prediction": [label_set(r, labels) for r in called],
        "correct": (truth == called).all(axis=1), "errors": (truth != called).sum(axis=1),
        **{f"p_{label}": probability[:, k] for k, label in enumerate(labels)},
        "site": np.where(np.arange(n) % 2, "A", "B"), "sha256": [f"s{k}" for k in range(n)],
    })  # fmt: skip
    identity = {"model_name": "m", "model_version": "", "model_sha256": "0", "started": "",
                "folder": "", "data_sha256": "d"}  # fmt: skip
    return Audit(name, identity, {"classes": list(labels), "multi_label": {}}, frame)


def _truth(n: int = 200) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3)) < 0.4


def test_an_audit_compared_with_itself_finds_nothing() -> None:
    truth = _truth()
    called = truth.copy()
    called[:20, 0] = ~called[:20, 0]  # some errors, the same in both audits
    audit = _audit("same", truth, called)

    comparison = compare_audits(audit, audit, PeriodicSettings(), 200)
    document = comparison_document(comparison)

    assert document["findings"] == [] and document["improvements"] == []
    assert len(comparison.labels) == 6 and not comparison.label_regressions
    assert all(d.diff == 0 and d.ci_low == 0 == d.ci_high for _, d in comparison.labels)
    assert comparison.mcnemar is not None
    assert (comparison.mcnemar.b, comparison.mcnemar.c) == (0, 0)
    assert not any(shift.moved for shift in comparison.predictions)
    assert document["gate"]["compare.label_regressions"] == 0


def test_a_label_called_more_often_is_a_fall_of_its_specificity_alone() -> None:
    truth = _truth()
    called = truth.copy()
    called[~truth[:, 2], 2] = np.arange(int((~truth[:, 2]).sum())) % 2 == 0  # half called

    comparison = compare_audits(_audit("old", truth, truth), _audit("new", truth, called),
                                PeriodicSettings(), 300)  # fmt: skip

    fell = [(label, d.name) for label, d in comparison.label_regressions]
    assert fell == [("c", "specificity")]
    specificity = dict(((label, d.name), d) for label, d in comparison.labels)["c", "specificity"]
    assert specificity.after == pytest.approx(1 - np.mean(called[~truth[:, 2], 2]))
    assert comparison.predictions[0].name == "share called c" and comparison.predictions[0].moved


@pytest.mark.parametrize(("positives", "regression"), [(0, False), (3, False), (10, True)])
def test_a_rate_is_compared_only_on_ten_images_or_more(positives: int, regression: bool) -> None:
    """The reviewer's case: three images with b, all missed by the new model, gave a
    sensitivity from 1 to 0 with the interval [-1, -1]; McNemar's p was 0.125."""
    truth = _truth()
    truth[:, 1] = np.arange(len(truth)) < positives
    called = truth.copy()
    called[:, 1] = False  # the new model misses every image with b

    comparison = compare_audits(_audit("old", truth, truth), _audit("new", truth, called),
                                PeriodicSettings(), 300)  # fmt: skip
    document = comparison_document(comparison)

    compared = [(label, d.name) for label, d in comparison.labels]
    assert (("b", "sensitivity") in compared) is regression
    assert len(comparison.labels) == 5 + regression
    assert document["gate"]["compare.label_regressions"] == int(regression)
    if not regression:
        assert document["labels_not_compared"] == [
            {"label": "b", "name": "sensitivity", "n_before": positives, "n_after": positives}
        ]
        rule = comparison_view(comparison).label_rule
        assert (
            f"Not compared, too few images: sensitivity of b ({positives} and {positives}" in rule
        )


def test_labels_are_matched_by_name_not_by_order() -> None:
    truth = _truth()
    called = truth.copy()
    called[: len(truth) // 2, 2] = False
    old, new = _audit("old", truth, truth), _audit("new", truth, called)
    reordered = Audit("old", old.identity, {"classes": ["c", "a", "b"], "multi_label": {}},
                      old.predictions)  # fmt: skip

    first = comparison_document(compare_audits(old, new, PeriodicSettings(), 100))
    second = comparison_document(compare_audits(reordered, new, PeriodicSettings(), 100))

    assert second["labels"] == first["labels"] and second["metrics"] == first["metrics"]
    assert [(r["label"], r["name"]) for r in first["labels"] if r["worse"]] == [
        ("c", "sensitivity")
    ]


def test_a_multi_label_and_a_single_label_audit_are_not_compared() -> None:
    truth = _truth(20)
    multi = _audit("run 2", truth, truth)
    single = Audit("run 1", multi.identity, {"classes": ["a", "b", "c"]}, multi.predictions)

    with pytest.raises(ConfigError, match="run 2 audited a multi-label model and run 1 a single"):
        compare_audits(single, multi, PeriodicSettings(), 10)


def test_embeddings_read_at_different_layers_are_not_compared() -> None:
    """One model file audited with two embedding layers: the drift test of the embedding
    had arrays of different widths to concatenate."""
    truth = _truth(40)
    rng = np.random.default_rng(0)
    old = dataclasses.replace(_audit("old", truth, truth), embeddings=rng.normal(size=(40, 8)))
    new = dataclasses.replace(_audit("new", truth, truth), embeddings=rng.normal(size=(40, 4)))

    comparison = compare_audits(old, new, PeriodicSettings(), 50)

    assert comparison.embedding is None
    assert comparison.embedding_note.startswith("not measured: the embeddings were read at")


def test_a_criterion_names_one_label_and_reads_its_figures_from_the_files(
    label_chain: dict[str, Any],
) -> None:
    second = label_chain["folders"][1]
    metrics, comparison = _json(second, "metrics.json"), _json(second, "comparison.json")
    rows = {(r["label"], r["name"]): r for r in comparison["labels"]}
    fell = rows["nodule", "sensitivity"]
    effusion = metrics["multi_label"]["labels"][0]
    operating = metrics["label_operating"][0]
    calibration = metrics["label_calibration"][0]
    assert effusion["label"] == operating["label"] == calibration["label"] == "effusion"
    criteria = parse_policy({
        "compare.label.nodule.sensitivity.diff.ci_high": ">= -0.05",
        "compare.label.nodule.specificity.diff.ci_high": ">= -0.05",
        "label.effusion.specificity.value": ">= 0",
        "label.effusion.ppv.ci_low": ">= 0",
        "label.effusion.ece.value": ">= 0",
        "label.nodule.auc.value": ">= 0",
        "label.nodul.sensitivity.value": ">= 0.9",
        "compare.label.nodul.sensitivity.diff.value": ">= 0",
    }, "test")  # fmt: skip

    outcomes = evaluate_policy(criteria, metrics, comparison["gate"]).outcomes

    assert [o.passed for o in outcomes] == [False, True, True, True, True, True, False, False]
    assert outcomes[0].value == fell["ci_high"] == -1.0
    assert outcomes[0].reason == "-1 is not >= -0.05"
    assert outcomes[2].value == effusion["specificity"]["value"]
    assert outcomes[3].value == operating["ppv"]["ci_low"]
    assert outcomes[4].value == calibration["ece"]["value"]
    assert outcomes[5].value == metrics["multi_label"]["labels"][1]["auc"]["value"]
    labels = "its labels: effusion, nodule, pneumothorax"
    assert outcomes[6].reason == outcomes[7].reason == f"no label 'nodul' in this audit ({labels})"


def test_a_named_label_that_cannot_be_read_says_why() -> None:
    labels = {"multi_label": {"labels": [{"label": "a.b", "sensitivity": {"value": 0.5}}]}}
    dotted, change = "label.a.b.sensitivity.value", "compare.label.a.b.specificity.after"

    assert label_numbers(labels)[dotted] == 0.5, "a label's name may hold dots"
    assert unnamed_label_reason(change, labels).startswith(
        "a.b's specificity was not compared with the previous audit"
    )
    for metric in (dotted, change):
        assert unnamed_label_reason(metric, {"accuracy": {"value": 0.9}}) == (
            "not a multi-label model: it has no label to name"
        )
    with pytest.raises(ConfigError, match=r"unknown metric 'label\.a\.sensitivty\.value'; "
                       r"valid metrics: .*label\.<label>\.sensitivity\|specificity"):  # fmt: skip
        parse_policy({"label.a.sensitivty.value": ">= 0.4"}, "test")


def test_paired_audits_test_each_labels_calls_on_the_images_whose_call_changed() -> None:
    """On the same 100 images, 10 newly called for a and none uncalled: McNemar's exact
    test (p = 2 / 2^10) finds the change that Fisher's test on the shares (50% against
    60%) does not."""
    truth = np.zeros((100, 3), dtype=bool)
    truth[:50, 0] = True
    called = truth.copy()
    called[50:60, 0] = True
    old, new = _audit("old", truth, truth), _audit("new", truth, called)

    paired = compare_audits(old, new, PeriodicSettings(), 200)
    shares = label_prediction_drift((truth, old.predictions), (called, new.predictions),
                                    ("a", "b", "c"), 0.05)  # fmt: skip

    assert paired.paired
    moved = paired.predictions[0]
    assert moved.name == "share called a" and (moved.before, moved.after) == (0.5, 0.6)
    assert moved.statistic == 10 and moved.p_value == pytest.approx(2 / 2**10 * 3)
    assert moved.moved, "Holm over the three labels: 3 x 0.00195"
    assert shares[0].p_value == pytest.approx(fisher_exact([[50, 50], [60, 40]]).pvalue * 3)
    assert not shares[0].moved, "Fisher's test on the shares alone misses it"
    scores = paired.predictions[1]
    assert scores.name == "probability of a" and scores.test == (
        "Wilcoxon signed-rank test on the same images, Holm-adjusted over the labels"
    )
    differences = (new.predictions["p_a"] - old.predictions["p_a"]).to_numpy()
    changed = wilcoxon(differences[differences != 0]).pvalue  # the 10 images: 2 / 2^10
    assert scores.p_value == pytest.approx(min(1.0, changed * 3))
    assert shares[1].test == "Kolmogorov–Smirnov, Holm-adjusted over the labels"
    assert scores.moved and not shares[1].moved, "Kolmogorov–Smirnov misses the 10 images"
    assert "McNemar's exact test on the same images" in " ".join(
        f for f in comparison_document(paired)["findings"]
    )


def test_a_misspelt_label_fails_even_on_a_first_audit(label_chain: dict[str, Any]) -> None:
    metrics = _json(label_chain["folders"][0], "metrics.json")
    criteria = parse_policy({
        "compare.label.nodlue.sensitivity.diff.ci_high": ">= -0.05",
        "compare.label.nodule.sensitivity.diff.ci_high": ">= -0.05",
    }, "test")  # fmt: skip

    misspelt, named = evaluate_policy(criteria, metrics, None).outcomes

    assert not misspelt.passed and misspelt.reason.startswith("no label 'nodlue' in this audit")
    assert named.passed and named.reason == "no previous audit of this model to compare with"
