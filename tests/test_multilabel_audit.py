"""The audit of a multi-label model end to end, on a model with a known answer
(:mod:`tests.labels`): every figure the run folder holds equals its recomputation from
``predictions.csv`` with scikit-learn, and the maps of a label called show its square."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from sklearn import metrics as skm

from auditor.checkpoint import read_value, write_value
from auditor.data import discover
from auditor.evaluate import EvaluationSettings, evaluate, probe_output_kind
from auditor.images import model_preprocessing
from auditor.load import OutputKind, load_model
from auditor.policy import evaluate_policy, parse_policy
from auditor.precision import check_precision
from tests.helpers import invoke, one_line_error, save_exported, save_torchscript
from tests.labels import (
    LABEL_FLAGS,
    LABELS,
    WRONG_ROWS,
    ChannelLabels,
    make_label_dataset,
    shown,
    square,
)


def _read(folder: Path) -> tuple[pd.DataFrame, dict]:
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    return predictions, json.loads((folder / "metrics.json").read_text())


def _matrix(cells: pd.Series) -> np.ndarray:
    return np.array([[name in str(c).split(";") for name in LABELS] for c in cells])


def test_the_known_errors_are_the_only_errors(label_audit: Path) -> None:
    predictions, metrics = _read(label_audit)

    assert metrics["output_kind"] == "label_logits" and metrics["classes"] == list(LABELS)
    assert sorted(predictions.loc[~predictions["correct"], "index"]) == sorted(WRONG_ROWS)
    called = [";".join(shown(i)) or "-" for i in predictions["index"]]
    assert predictions["prediction"].tolist() == called
    assert predictions["errors"].tolist() == (
        (_matrix(predictions["label"]) != _matrix(predictions["prediction"])).sum(axis=1).tolist()
    )


def test_metrics_json_equals_scikit_learn_on_predictions_csv(label_audit: Path) -> None:
    predictions, metrics = _read(label_audit)
    found = metrics["multi_label"]
    truth, calls = _matrix(predictions["label"]), _matrix(predictions["prediction"])
    scores = predictions[[f"p_{n}" for n in LABELS]].to_numpy()

    assert found["subset_accuracy"]["value"] == pytest.approx(skm.accuracy_score(truth, calls))
    assert found["hamming_loss"]["value"] == pytest.approx(skm.hamming_loss(truth, calls))
    assert found["macro_auc"]["value"] == pytest.approx(skm.roc_auc_score(truth, scores))
    micro = skm.roc_auc_score(truth, scores, average="micro")
    assert found["micro_auc"]["value"] == pytest.approx(micro)
    for k, row in enumerate(found["labels"]):
        assert row["label"] == LABELS[k] and row["threshold"] == 0.5
        assert (calls[:, k] == (scores[:, k] >= 0.5)).all()
        assert row["sensitivity"]["value"] == pytest.approx(
            skm.recall_score(truth[:, k], calls[:, k])
        )
        negatives = ~truth[:, k]
        specificity = (~calls[:, k] & negatives).sum() / negatives.sum()
        assert row["specificity"]["value"] == pytest.approx(specificity)
        assert row["auc"]["value"] == pytest.approx(skm.roc_auc_score(truth[:, k], scores[:, k]))
    assert metrics["resampling"]["column"] == "patient"
    assert "accuracy" not in metrics and "operating_point" not in metrics


def test_each_label_called_is_explained_and_its_maps_show_its_square(label_audit: Path) -> None:
    records = pd.read_csv(label_audit / "explanations.csv", keep_default_na=False)
    maps = np.load(label_audit / "explanations.npz")
    predictions, _ = _read(label_audit)
    rows = predictions.set_index("index")

    for index, mine in records.groupby("index"):
        called = [n for n in str(rows.at[index, "prediction"]).split(";") if n != "-"]
        had = [n for n in str(rows.at[index, "label"]).split(";") if n not in ("-", *called)]
        roles = [f"predicted:{n}" for n in called] + [f"missed:{n}" for n in had]
        assert list(dict.fromkeys(mine["role"])) == roles
    contrast = {}
    for row in range(len(maps["index"])):
        if maps["method"][row] == "grad-cam":
            inside = square(int(maps["index"][row]))
            value = maps["maps"][row]
            contrast[(int(maps["index"][row]), str(maps["role"][row]))] = value[
                inside
            ].mean() / max(value[~inside].mean(), 1e-6)
    called_maps = [v for (_, role), v in contrast.items() if role.startswith("predicted:")]
    assert called_maps and min(called_maps) > 2  # the square holds the label's evidence
    # negative control: x03 shows pneumothorax, not the nodule its manifest claims
    assert contrast[(3, "missed:nodule")] < 1.5


def test_the_summary_states_the_errors_as_recomputed(label_audit: Path) -> None:
    predictions, metrics = _read(label_audit)
    truth, calls = _matrix(predictions["label"]), _matrix(predictions["prediction"])
    missed, false = (truth & ~calls).sum(axis=0), (calls & ~truth).sum(axis=0)
    worst = int(np.argmax(missed + false))
    n_wrong = int((~predictions["correct"]).sum())
    summary = (label_audit / "summary.md").read_text()

    expected = (
        f"{n_wrong} of {len(predictions)} images ({n_wrong / len(predictions):.1%}) have at least "
        f"one label wrong; the most wrong calls are for {LABELS[worst]}: missed on "
        f"{missed[worst]} image(s) that have it, called on {false[worst]} that do not."
    )
    assert expected in " ".join(summary.split())
    subset = metrics["multi_label"]["subset_accuracy"]["value"]
    assert f"| subset accuracy (every label right) | {subset:.1%} |" in summary
    assert "Not run for a multi-label model" not in summary, "every analysis runs"


def test_the_report_shows_the_label_sections_and_not_the_single_label_ones(
    label_audit: Path,
) -> None:
    html = (label_audit / "report.html").read_text()
    ids = set(re.findall(r'<section[^>]* id="([^"]+)"', html)) | set(
        re.findall(r' id="([^"]+)"', html)
    )

    assert {
        "label-summary", "labels", "trust", "misclassified", "limitations", "dependence",
        "label-calibration", "label-failures", "label-failures-detail", "label-subgroups",
        "label-subgroups-detail", "label-operating", "robustness", "robustness-detail",
    } <= ids  # fmt: skip
    assert not {"performance", "calibration", "operating", "failures"} & ids
    assert "were not run" not in html and {"dissection", "counterfactuals"} <= ids
    assert "tcav" not in ids, "no concept is declared, so TCAV has nothing to test"
    assert "Maps for label" in html and "a label it has, missed" in html


def test_a_policy_gates_on_the_multi_label_metrics(label_audit: Path) -> None:
    _, metrics = _read(label_audit)
    criteria = parse_policy(
        {
            "multi_label.subset_accuracy.value": ">= 0.9",
            "multi_label.macro_auc.value": ">= 0.9",
            "multi_label.lowest_sensitivity.value": ">= 0.95",
            "compare.accuracy.diff.value": ">= -0.05",
        },
        "test",
    )

    result = evaluate_policy(criteria, metrics, "run 3's folder is not here")

    outcomes = {o.criterion.metric: (o.passed, o.reason) for o in result.outcomes}
    assert outcomes["multi_label.subset_accuracy.value"] == (False, "0.875 is not >= 0.9")
    assert outcomes["multi_label.macro_auc.value"][0]
    lowest = min(r["sensitivity"]["value"] for r in metrics["multi_label"]["labels"])
    assert outcomes["multi_label.lowest_sensitivity.value"] == (
        False, f"{lowest:.4g} is not >= 0.95"
    )  # fmt: skip
    assert outcomes["compare.accuracy.diff.value"] == (
        False, "not compared: run 3's folder is not here"
    )  # fmt: skip


def test_a_threshold_count_that_fits_no_label_count_is_a_one_line_error(tmp_path: Path) -> None:
    model = save_torchscript(ChannelLabels(), tmp_path / "labels.pt")
    manifest = make_label_dataset(tmp_path / "data", n=8)
    config = tmp_path / "audit.toml"
    config.write_text("label-thresholds = [0.5, 0.4]\n")

    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--config", str(config),
        "--out", str(tmp_path / "out"), "--device", "cpu",
    )  # fmt: skip

    one_line_error(result, "label-thresholds gives 2 thresholds for 3 labels")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_multi_label_evaluation_survives_the_checkpoint_and_mixed_precision(
    tmp_path: Path,
) -> None:
    model = load_model(save_torchscript(ChannelLabels(), tmp_path / "labels.pt"), _cpu())
    dataset = discover(make_label_dataset(tmp_path / "data", n=16))
    preprocessing = model_preprocessing(dataset, 3, None, None, None, 10**8)
    kind = probe_output_kind(model, dataset, preprocessing)
    settings = EvaluationSettings(bootstrap=100, precision="bf16", label_thresholds=(0.5, 0.6, 0.7))

    evaluation = evaluate(model, dataset, preprocessing, kind, settings)
    write_value(evaluation, tmp_path / "saved")
    back = read_value(tmp_path / "saved")
    check = check_precision(model, dataset, preprocessing, kind, settings, evaluation.predictions)

    assert kind is OutputKind.LABEL_LOGITS and evaluation.metrics is None
    assert back.label_metrics == evaluation.label_metrics
    assert [r.threshold for r in evaluation.label_metrics.labels] == [0.5, 0.6, 0.7]
    assert check is not None and check.images == 16
    subset = evaluation.label_metrics.subset_accuracy.value
    assert check.accuracy_fp32 == pytest.approx(subset, abs=1 / 16)


def _cpu():
    import torch

    return torch.device("cpu")


def test_the_exported_twin_writes_the_scripted_models_results(
    label_audit: Path, label_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same multi-label model saved with ``torch.export`` instead of TorchScript,
    audited with the same flags: every CSV and the metrics are the same bytes."""
    model = save_exported(ChannelLabels(), tmp_path / "labels.pt2")
    result = invoke(
        "run", "--model", str(model), "--data", str(label_data[1]), "--out",
        str(tmp_path / "out"), *LABEL_FLAGS, "--format", "html,md",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + (result.stderr or "")
    exported = Path(result.stdout.strip().splitlines()[-1])
    files = [*sorted(p.name for p in label_audit.glob("*.csv")), "metrics.json"]
    assert sorted(p.name for p in exported.glob("*.csv")) == files[:-1]
    different = [f for f in files if (exported / f).read_bytes() != (label_audit / f).read_bytes()]
    assert different == []
    with (
        np.load(exported / "explanations.npz") as left,
        np.load(label_audit / "explanations.npz") as right,
    ):
        assert sorted(left.files) == sorted(right.files)
        for key in left.files:
            if left[key].dtype.kind == "f":  # the maps: the two formats' kernels may differ
                np.testing.assert_allclose(left[key], right[key], atol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def test_comparing_a_multi_label_audit_with_a_single_label_one_is_a_one_line_error(
    label_audit: Path, audit: tuple[Result, Path], tmp_path: Path
) -> None:
    out = tmp_path / "comparisons"
    result = invoke("compare", str(audit[1]), str(label_audit), "--out", str(out))

    one_line_error(result, "audited a multi-label model and", "a single-label one")
    assert not out.exists() or not any(out.iterdir()), "nothing is written"
