"""Comparing audits: a chain of three audits of the demo model in one history.

1. the sample model on demo data;
2. a second version trained with far fewer steps, on the same images: the comparison is
   paired, flags the regression (McNemar's test equals scipy's binomial test on the
   discordant pairs) and the policy exits 3;
3. that version again on the same images made brighter: the inputs and the embedding
   moved, and the policy exits 3 on the intensity criterion.

Then ``auditor compare`` on two history ids, and the drift tests' false alarms on
samples of one distribution.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import Result
from jsonschema import Draft202012Validator
from PIL import Image, ImageEnhance
from scipy.stats import binomtest, chi2, wilcoxon
from statsmodels.stats.contingency_tables import SquareTable

from auditor.compare import Audit, compare_audits
from auditor.compare.drift import intensity_drift, mmd_test, prediction_drift
from auditor.compare.stats import mcnemar
from auditor.documents import schema
from auditor.history.settings import PeriodicSettings
from auditor.images import Preprocessing, channel_statistics
from auditor.policy import evaluate_policy, parse_policy
from auditor.resources import resource_path
from auditor.synthetic import write_dataset
from tests.helpers import invoke

POLICY = """
[policy]
"accuracy.ci_low" = ">= 0.0"
"compare.accuracy.diff.ci_high" = ">= -0.02"
"compare.drift.intensity.p_value" = ">= 0.01"
"""


def _brighter(source: Path, target: Path) -> Path:
    """A copy of a written data set whose images are 40% brighter (masks unchanged)."""
    for path in source.rglob("*"):
        if path.is_file():
            copy = target / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            if path.parent.name == "images":
                ImageEnhance.Brightness(Image.open(path).convert("RGB")).enhance(1.4).save(copy)
            else:
                copy.write_bytes(path.read_bytes())
    return target / "manifest.csv"


def _weaker_model(folder: Path) -> Path:
    """The sample model's recipe with one epoch on 160 images, trained in a process of its
    own (the recipe sets torch's global state: threads, denormals, determinism)."""
    out = folder / "weaker.pt"
    script = resource_path("sample_models", "train_sample_cnn.py")
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(out), "--epochs", "1", "--n-train", "160",
         "--n-val", "20"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _run(config: Path, model: Path, data: Path, out: Path, version: str) -> Result:
    return invoke(
        "run", "--config", str(config), "--model", str(model), "--data", str(data),
        "--out", str(out), "--model-name", "lesion", "--model-version", version,
        "--methods", "integrated-gradients,grad-cam", "--explain-samples", "2",
        "--counterfactual-images", "2", "--format", "md", "--device", "cpu", "--seed", "0",
    )  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("chain")
    config = root / "audit.toml"
    config.write_text(POLICY, encoding="utf-8")
    data = write_dataset(root / "data", "val", 120, seed=5)
    brighter = _brighter(root / "data", root / "brighter")
    sample = resource_path("sample_models", "sample_cnn.pt")
    weaker = _weaker_model(root)
    out = root / "reports"
    runs = [
        _run(config, sample, data, out, "1"),
        _run(config, weaker, data, out, "2"),
        _run(config, weaker, brighter, out, "2"),
    ]
    folders = [Path(r.stdout.strip().splitlines()[-1]) for r in runs]
    return {"runs": runs, "folders": folders, "out": out}


def _json(folder: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((folder / name).read_text(encoding="utf-8")))


def test_a_first_audit_has_nothing_to_compare_and_its_compare_criteria_pass(
    chain: dict[str, Any],
) -> None:
    first = chain["folders"][0]
    policy = _json(first, "policy.json")

    assert chain["runs"][0].exit_code == 0, chain["runs"][0].output
    assert not (first / "comparison.json").exists()
    compare = [c for c in policy["criteria"] if c["metric"].startswith("compare.")]
    assert compare and all(c["passed"] and "no previous audit" in c["reason"] for c in compare)
    assert 'skipped="2"' in (first / "junit.xml").read_text()


def test_a_weaker_version_on_the_same_images_is_a_paired_regression(
    chain: dict[str, Any],
) -> None:
    first, second = chain["folders"][:2]
    comparison = _json(second, "comparison.json")
    old = pd.read_csv(first / "predictions.csv")
    new = pd.read_csv(second / "predictions.csv")
    joined = old.merge(new, on="sha256", suffixes=("_old", "_new"))
    b = int((joined["correct_old"] & ~joined["correct_new"]).sum())
    c = int((~joined["correct_old"] & joined["correct_new"]).sum())
    accuracy = next(m for m in comparison["metrics"] if m["name"] == "accuracy")

    assert chain["runs"][1].exit_code == 3
    assert comparison["paired"] and comparison["shared_images"] == len(joined) == 120
    assert comparison["old"]["folder"] == str(first)
    assert (comparison["mcnemar"]["b"], comparison["mcnemar"]["c"]) == (b, c)
    assert comparison["mcnemar"]["p_value"] == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
    assert accuracy["before"] == pytest.approx(old["correct"].mean())
    assert accuracy["after"] == pytest.approx(new["correct"].mean())
    assert accuracy["worse"] and accuracy["ci_high"] < -0.02
    failed = [c["metric"] for c in _json(second, "policy.json")["criteria"] if not c["passed"]]
    assert failed == ["compare.accuracy.diff.ci_high"]
    assert {(g["column"], g["value"]) for g in comparison["subgroups"]} >= {
        ("site", "site-A"), ("marker", "True"), ("marker", "False"),
    }  # fmt: skip
    for group in comparison["subgroups"]:
        column, value = group["column"], group["value"]
        mine, theirs = (f[f[column].astype(str) == value]["correct"] for f in (old, new))
        assert (group["before"], group["after"]) == pytest.approx((mine.mean(), theirs.mean()))
        assert (group["n_before"], group["n_after"]) == (len(mine), len(theirs))


def test_the_regression_is_told_on_page_one_with_figures_from_the_files(
    chain: dict[str, Any],
) -> None:
    first, second = chain["folders"][:2]
    summary = (second / "summary.md").read_text(encoding="utf-8")
    old = pd.read_csv(first / "predictions.csv")["correct"].mean()
    new = pd.read_csv(second / "predictions.csv")["correct"].mean()
    line = next(x for x in summary.splitlines() if "Since the previous audit.** Accuracy" in x)

    assert f"Accuracy fell from {old:.3f} to {new:.3f} (−{old - new:.3f}, 95% CI" in line
    assert "on the 120 images both audits scored" in line
    assert "McNemar" in summary


def test_brighter_images_are_flagged_as_drift_of_the_inputs_and_the_embedding(
    chain: dict[str, Any],
) -> None:
    second, third = chain["folders"][1:]
    comparison = _json(third, "comparison.json")
    moved = [s["name"] for s in comparison["drift"]["intensity"] if s["moved"]]
    old = pd.read_csv(second / "intensities.csv")
    new = pd.read_csv(third / "intensities.csv")

    assert chain["runs"][2].exit_code == 3
    assert not comparison["paired"] and comparison["mcnemar"] is None
    assert {"mean_red", "mean_green", "mean_blue"} <= set(moved)
    red = next(s for s in comparison["drift"]["intensity"] if s["name"] == "mean_red")
    assert red["before"] == pytest.approx(old["mean_red"].mean())
    assert red["after"] == pytest.approx(new["mean_red"].mean()) and red["after"] > red["before"]
    assert comparison["drift"]["embedding"]["moved"]  # the same model file: one space
    summary = (third / "summary.md").read_text(encoding="utf-8")
    assert "The input images changed: mean " in summary
    failed = [c["metric"] for c in _json(third, "policy.json")["criteria"] if not c["passed"]]
    assert "compare.drift.intensity.p_value" in failed


def test_compare_by_history_ids_writes_a_comparison_folder(chain: dict[str, Any]) -> None:
    out = chain["out"]
    done = invoke("compare", "1", "3", "--out", str(out), "--bootstrap", "200")
    assert done.exit_code == 0, done.output + done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    comparison = _json(folder, "comparison.json")
    html = (folder / "comparison.html").read_text(encoding="utf-8")

    assert {p.name for p in folder.iterdir()} == {
        "comparison.json", "comparison.html", "comparison.pdf",
    }  # fmt: skip
    assert comparison["old"]["label"] == "run 1" and comparison["new"]["label"] == "run 3"
    errors = list(Draft202012Validator(schema("comparison")).iter_errors(comparison))
    assert not errors, [e.message for e in errors[:3]]
    assert comparison["drift"]["embedding"] is None
    assert "different spaces" in comparison["drift"]["embedding_note"]
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) >= 2
    for finding in comparison["findings"]:
        assert f"Finding: {finding}" in done.stderr


def test_the_history_lists_the_chain(chain: dict[str, Any]) -> None:
    listed = invoke("history", "--out", str(chain["out"]), "--json", "--model", "lesion")
    runs = json.loads(listed.stdout)

    assert [r["model_version"] for r in runs] == ["1", "2", "2"]
    assert [r["policy_passed"] for r in runs] == [True, False, False]
    assert (chain["out"] / "history.html").is_file()


def test_an_audit_compared_with_itself_finds_nothing(chain: dict[str, Any]) -> None:
    folder = str(chain["folders"][0])
    done = invoke("compare", folder, folder, "--out", str(chain["out"]), "--bootstrap", "100")
    comparison = _json(Path(done.stdout.strip().splitlines()[-1]), "comparison.json")

    assert comparison["findings"] == [] and comparison["same_files"]
    assert comparison["mcnemar"] == {"b": 0, "c": 0, "p_value": 1.0, "p_worse": 1.0}
    assert comparison["drift"]["intensity"] == []  # the same files: nothing to test
    assert comparison["gate"]["compare.drift.intensity.p_value"] == 1.0
    assert all(e["median"] == pytest.approx(1.0) for e in comparison["explanations"])


def _exchangeable(rng: np.random.Generator, n: int) -> list[pd.DataFrame]:
    """Two audits' calls of the same ``n`` images under the paired null: each image's
    two scores are its own level plus independent noise (so the two audits' calls are
    exchangeable, image by image), called ``b`` above 0.5."""
    level = rng.normal(0.45, 0.2, n)
    scores = [np.clip(level + rng.normal(0, 0.1, n), 0, 1) for _ in range(2)]
    return [pd.DataFrame({"prediction": np.where(s > 0.5, "b", "a"), "confidence": s})
            for s in scores]  # fmt: skip


def _alarms(seed: int) -> tuple[bool, bool, bool, bool]:
    """Whether each drift test alarms on two independent samples of one distribution
    (and the paired prediction tests on two exchangeable audits of the same images)."""
    rng = np.random.default_rng(seed)
    columns = ["mean_red", "mean_green", "mean_blue", "std_red", "std_green", "std_blue"]
    frames = [
        pd.DataFrame(rng.normal([0.5, 0.4, 0.3, 0.1, 0.1, 0.1], 0.05, (150, 6)), columns=columns)
        for _ in range(2)
    ]
    calls = [
        pd.DataFrame({"prediction": rng.choice(["a", "b"], 150, p=[0.6, 0.4]),
                      "confidence": rng.beta(5, 2, 150)})
        for _ in range(2)
    ]  # fmt: skip
    embeddings = [rng.normal(0, 1, (150, 16)) + 3 for _ in range(2)]
    pairs = (np.arange(150), np.arange(150))
    return (
        any(s.moved for s in intensity_drift(*frames, 0.05)),
        mmd_test(*embeddings, 99, 1000, 0.05, seed).moved,
        any(s.moved for s in prediction_drift(*calls, ("a", "b"), 0.05)),
        any(s.moved for s in prediction_drift(*_exchangeable(rng, 150), ("a", "b"), 0.05, pairs)),
    )


def test_the_drift_tests_raise_few_false_alarms_over_seeds() -> None:
    """20 seeds: each test alarms as Binomial(20, <= 0.05) under the null (the pair of
    prediction tests, <= 0.1); 4 or more of 20 has probability below 0.02 (6 or more for
    the pair, below 0.02)."""
    alarms = [_alarms(seed) for seed in range(20)]
    intensity, embedding, predictions, paired = (sum(a[k] for a in alarms) for k in range(4))

    assert intensity <= 3 and embedding <= 3 and predictions <= 5 and paired <= 5, alarms


def test_paired_audits_test_the_predictions_image_by_image() -> None:
    """The same 200 images, 12 newly called b and none the other way, and every
    confidence 0.02 lower: McNemar's exact test (p = 2 / 2^12) and Wilcoxon's signed-rank
    test find what the two-sample tests (chi-squared, Kolmogorov–Smirnov) on the same
    calls miss."""
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.6, 1.0, 200)
    called = np.where(np.arange(200) < 80, "b", "a")
    old = pd.DataFrame({"prediction": called, "confidence": confidence})
    new = pd.DataFrame({"prediction": np.where(np.arange(200) < 92, "b", "a"),
                        "confidence": confidence - 0.02})  # fmt: skip
    pairs = (np.arange(200), np.arange(200))

    classes, lower = prediction_drift(old, new, ("a", "b"), 0.05, pairs)
    unpaired = prediction_drift(old, new, ("a", "b"), 0.05)

    assert (classes.name, classes.before, classes.after) == ("share called b", 0.4, 0.46)
    assert classes.test == "McNemar's exact test on the same images" and classes.statistic == 12
    assert classes.p_value == pytest.approx(2 / 2**12) and classes.moved
    assert lower.test == "Wilcoxon signed-rank test on the same images" and lower.moved
    assert lower.p_value == pytest.approx(wilcoxon(new["confidence"] - confidence).pvalue)
    assert [s.test for s in unpaired] == ["chi-squared", "Kolmogorov–Smirnov"]
    assert not any(s.moved for s in unpaired), "the two-sample tests miss both"


def _paired_classes(old: np.ndarray, new: np.ndarray, classes: tuple[str, ...]) -> Any:
    frames = [pd.DataFrame({"prediction": c, "confidence": 0.9}) for c in (old, new)]
    return prediction_drift(*frames, classes, 0.05, (np.arange(len(old)), np.arange(len(old))))[0]


def test_paired_audits_of_more_classes_test_marginal_homogeneity() -> None:
    """Changes among three classes: the Stuart–Maxwell test, equal to statsmodels' on
    the table of the images' two calls (a fourth class, never called, does not enter);
    the same calls: p = 1."""
    classes = ("a", "b", "c", "d")
    old = np.array(["a"] * 60 + ["b"] * 50 + ["c"] * 40)
    new = old.copy()
    new[:9] = "b"  # 9 images from a to b
    new[60:63] = "c"  # 3 from b to c

    found = _paired_classes(old, new, classes)
    same = _paired_classes(old, old, classes)

    expected = SquareTable(pd.crosstab(old, new).to_numpy(), shift_zeros=False).homogeneity()
    assert found.test == "Stuart–Maxwell test on the same images"
    assert found.name == "share called a" and found.after == pytest.approx(51 / 150)
    assert found.statistic == pytest.approx(expected.statistic) and found.moved
    assert found.p_value == pytest.approx(expected.pvalue)
    assert (same.statistic, same.p_value, same.moved) == (0.0, 1.0, False)


def test_changes_between_two_of_more_classes_or_in_separate_groups_are_still_tested() -> None:
    """Where statsmodels' Stuart–Maxwell test is NaN (its covariance, one class left
    out, is singular): 9 images from b to c while a is called alike, McNemar's exact
    test on the two classes involved (p = 2 / 2^9); 9 from a to b and 9 from c to d,
    two groups, the test on 2 degrees of freedom: the sum of the two McNemar
    statistics, 9 + 9."""
    old = np.array(["a"] * 60 + ["b"] * 50 + ["c"] * 40 + ["d"] * 30)
    two = old.copy()
    two[60:69] = "c"
    groups = old.copy()
    groups[:9], groups[110:119] = "b", "d"

    between_two = _paired_classes(old, two, ("a", "b", "c", "d"))
    in_groups = _paired_classes(old, groups, ("a", "b", "c", "d"))

    table = SquareTable(pd.crosstab(old, two).to_numpy(), shift_zeros=False)
    with pytest.warns(Warning, match="invert"):
        assert np.isnan(table.homogeneity().pvalue)
    assert between_two.test == "McNemar's exact test on the same images"
    assert between_two.p_value == pytest.approx(2 / 2**9) and between_two.moved
    assert in_groups.test == "Stuart–Maxwell test on the same images"
    assert in_groups.statistic == pytest.approx(18.0)
    assert in_groups.p_value == pytest.approx(chi2.sf(18.0, 2)) and in_groups.moved


def test_a_few_changed_confidences_get_the_exact_test_and_rounding_is_no_change() -> None:
    """5 of 200 confidences 0.01 to 0.05 lower: Wilcoxon's exact test on those five
    (p = 2 / 2^5: not below 0.05, where the normal approximation with the 195 zeros
    said 0.043); every confidence 2e-7 higher (a re-run's rounding): no change, p = 1."""
    confidence = np.random.default_rng(0).uniform(0.6, 1.0, 200)
    lower = confidence.copy()
    lower[:5] -= [0.01, 0.02, 0.03, 0.04, 0.05]
    pairs = (np.arange(200), np.arange(200))
    old = pd.DataFrame({"prediction": "a", "confidence": confidence})

    def moved(values: np.ndarray) -> Any:
        new = pd.DataFrame({"prediction": "a", "confidence": values})
        return prediction_drift(old, new, ("a", "b"), 0.05, pairs)[1]

    few, rounding = moved(lower), moved(confidence + 2e-7)

    assert few.p_value == pytest.approx(2 / 2**5) and not few.moved
    assert (rounding.p_value, rounding.moved) == (1.0, False)


def test_planted_shifts_are_found() -> None:
    rng = np.random.default_rng(0)
    old = pd.DataFrame({"mean_red": rng.normal(0.5, 0.05, 100)})
    new = pd.DataFrame({"mean_red": rng.normal(0.56, 0.05, 100)})
    shifted = rng.normal(0, 1, (100, 8))
    shifted[:, 0] += 1.0

    assert intensity_drift(old, new, 0.05)[0].moved
    assert mmd_test(rng.normal(0, 1, (100, 8)) + 2, shifted + 2, 99, 1000, 0.05, 0).moved


def test_channel_statistics_undo_the_models_normalisation() -> None:
    torch.manual_seed(0)
    raw = torch.rand(4, 3, 8, 8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalised = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    preprocessing = Preprocessing(channels=3, mean=mean, std=std)

    statistics = channel_statistics(normalised, preprocessing)

    expected = torch.cat([raw.mean((2, 3)), raw.std((2, 3), correction=0)], dim=1)
    assert statistics.shape == (4, 6)
    np.testing.assert_allclose(statistics, expected.numpy(), atol=1e-6)


def _audit(label: str, correct: np.ndarray, sha: list[str], labels: list[str]) -> Audit:
    """A two-class audit whose calls are right where ``correct`` says."""
    n = len(correct)
    called = [
        y if ok else ("b" if y == "a" else "a") for y, ok in zip(labels, correct, strict=True)
    ]
    predictions = pd.DataFrame({
        "index": np.arange(n), "path": [f"{s}.png" for s in sha], "label": labels,
        "prediction": called, "confidence": 0.9, "correct": correct,
        "p_a": [0.9 if c == "a" else 0.1 for c in called],
        "p_b": [0.1 if c == "a" else 0.9 for c in called], "site": "x", "sha256": sha,
    })  # fmt: skip
    identity = {"model_name": "m", "model_version": "", "model_sha256": "0", "started": "",
                "folder": "", "data_sha256": str(hash(tuple(sha)))}  # fmt: skip
    return Audit(label, identity, {"classes": ["a", "b"], "operating_point": None}, predictions)


def test_a_grown_data_set_is_compared_unpaired_and_its_fall_is_seen() -> None:
    """The reviewer's case: 200 images at 87%, then the same 200 and 200 new ones at 50%.
    Paired on the 200 shared images the change would be 0 and hide the fall."""
    rng = np.random.default_rng(0)
    shared = [f"s{k}" for k in range(200)]
    labels = list(rng.choice(["a", "b"], 400))
    old_correct = np.arange(200) < 174
    new_correct = np.concatenate([old_correct, np.arange(200) < 26])
    old = _audit("old", old_correct, shared, labels[:200])
    new = _audit("new", new_correct, shared + [f"n{k}" for k in range(200)], labels)

    comparison = compare_audits(old, new, PeriodicSettings(), 200)
    accuracy = comparison.metrics[0]

    assert not comparison.paired and comparison.shared == 200
    assert (accuracy.before, accuracy.after) == pytest.approx((0.87, 0.5))
    assert accuracy.worse and comparison.mcnemar is None


def test_images_are_paired_by_file_and_label() -> None:
    sha = [f"s{k}" for k in range(40)]
    labels = ["a", "b"] * 20
    old = _audit("old", np.ones(40, bool), sha, labels)
    relabelled = _audit("new", np.ones(40, bool), sha, ["b", "a"] * 20)

    assert compare_audits(old, old, PeriodicSettings(), 100).paired
    assert compare_audits(old, relabelled, PeriodicSettings(), 100).shared == 0


def test_mcnemar_one_sided_is_small_only_when_more_calls_became_wrong() -> None:
    worse = mcnemar(np.array([True] * 20 + [False] * 2), np.array([False] * 20 + [True] * 2))
    better = mcnemar(np.array([False] * 20 + [True] * 2), np.array([True] * 20 + [False] * 2))

    assert (worse.b, worse.c) == (20, 2) and worse.p_worse < 0.001
    assert better.p_value == worse.p_value and better.p_worse > 0.99
    assert worse.p_worse == pytest.approx(binomtest(20, 22, 0.5, alternative="greater").pvalue)


def test_compare_criteria_pass_on_a_first_audit_and_fail_when_one_was_not_compared() -> None:
    criteria = parse_policy({"compare.accuracy.diff.ci_high": ">= -0.02"}, "test")
    metrics = {key: None for key in ("metadata_dependence", "robustness", "fairness")} | {
        "trust": {"methods": [], "shortcuts": None}, "positive_calibration": None,
    }  # fmt: skip
    first = evaluate_policy(criteria, metrics, None)
    lost = evaluate_policy(criteria, metrics, "run 3's folder is not here")
    measured = evaluate_policy(criteria, metrics, {"compare.accuracy.diff.ci_high": -0.05})

    assert first.passed and "no previous audit" in first.outcomes[0].reason
    assert not lost.passed and lost.outcomes[0].reason == "not compared: run 3's folder is not here"
    assert not measured.passed and measured.outcomes[0].value == -0.05
