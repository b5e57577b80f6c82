"""The command line, in-process: a good run's folder, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import Result

from auditor.measure import RECORD_DTYPES
from auditor.measure.verdicts import VERDICT_COLUMNS
from tests.helpers import (
    XSS_CLASS,
    TinyNet,
    check_run_folder,
    invoke,
    one_line_error,
    save_torchscript,
    write_manifest,
    write_png,
)

RUN_FILES = {
    "report.html",
    "report.pdf",
    "predictions.csv",
    "layers.csv",
    "excluded.csv",
    "metrics.json",
    "manifest.json",
    "explanations.npz",
    "explanations.csv",
    "features.npz",
    "trust.csv",
    "dependence.csv",  # the manifest has a metadata column and two classes
    "curves.csv",  # two classes: an operating point
    "subgroups.csv",
    "trust_records.csv",
    "robustness.csv",
    "robustness_predictions.csv",
    "dissection.csv",  # the computed concepts, on the spatial stages
    "embeddings.npy",  # the input of the linear head, one row per prediction
    "projections.csv",
    "agreement.csv",
    "neighbours.csv",
    "duplicates.csv",
    "counterfactuals.csv",  # the explained cases' counterfactuals
    "intensities.csv",  # each image's pixel statistics, for comparing two audits' inputs
    "policy.json",
    "junit.xml",
    "SHA256SUMS",
    "summary.md",
}


def test_run_folder_is_named_after_the_model_and_holds_every_file(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    assert folder.name.startswith("tiny-") and folder.name.endswith("Z")
    assert {p.name for p in folder.iterdir()} == RUN_FILES
    assert not list(folder.parent.glob(".*.partial"))


def test_manifest_hashes_every_written_file(audit: tuple[Result, Path], tiny_model: Path) -> None:
    _, folder = audit
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == RUN_FILES - {"manifest.json", "report.pdf", "SHA256SUMS"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha
    sums = dict(
        reversed(line.split("  ")) for line in (folder / "SHA256SUMS").read_text().splitlines()
    )
    assert set(sums) == RUN_FILES - {"SHA256SUMS"}
    for name, sha in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha
    assert manifest["model"]["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert len(manifest["data"]["sha256"]) == 64


def test_metrics_json_matches_the_predictions(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    metrics = json.loads((folder / "metrics.json").read_text())
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    assert metrics["schema_version"] == 16
    assert metrics["n_images"] == len(predictions) == 12
    assert metrics["n_excluded"] == 1
    assert metrics["accuracy"]["value"] == pytest.approx(predictions["correct"].mean())
    assert (
        metrics["accuracy"]["ci_low"]
        <= metrics["accuracy"]["value"]
        <= metrics["accuracy"]["ci_high"]
    )
    assert {"value", "ci_low", "ci_high"} <= set(metrics["balanced_accuracy"])
    assert [c["class"] for c in metrics["per_class"]] == sorted(["benign", XSS_CLASS])
    assert {"precision", "sensitivity", "specificity", "f1", "support"} <= set(
        metrics["per_class"][0]
    )
    cells = predictions.groupby(["label", "prediction"]).size()
    assert {(c["true"], c["predicted"]): c["images"] for c in metrics["confusion"]} == {
        pair: int(count) for pair, count in cells.items()
    }
    assert 0 <= metrics["ece"] <= 1


def test_trust_csv_is_recomputed_from_the_per_image_records(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    trust = pd.read_csv(folder / "trust.csv", keep_default_na=False).set_index("method")
    records = pd.read_csv(folder / "trust_records.csv", keep_default_na=False)
    explained = pd.read_csv(folder / "explanations.csv")
    settings = json.loads((folder / "metrics.json").read_text())["trust"]["settings"]
    assert list(trust.columns) == list(VERDICT_COLUMNS)[1:]
    assert list(records.columns) == list(RECORD_DTYPES)
    assert list(trust.index) == list(dict.fromkeys(explained["method"]))
    ok = records[records["status"] == "ok"]
    last_step = ok[ok["measure"] == "spearman"]["step"].iloc[-1]
    for method, row in trust.iterrows():
        mine = ok[ok["method"] == method]
        spearman = mine[(mine["measure"] == "spearman") & (mine["step"] == last_step)]["value"]
        gini = mine[mine["measure"] == "gini"]["value"]
        assert float(row["randomisation_spearman"]) == pytest.approx(spearman.mean())
        assert float(row["gini"]) == pytest.approx(gini.mean())
        fails = spearman.mean() >= settings["randomisation_threshold"]
        assert row["randomisation"] == ("fails" if fails else "passes")
        assert (row["level"] == "bad") == fails
    random_curves = ok[(ok["method"] == "random") & (ok["measure"] == "deletion_auc")]
    assert len(random_curves), "the random baseline's curves are recorded"


def test_a_run_folder_that_breaks_its_schema_is_caught(
    audit: tuple[Result, Path], tmp_path: Path
) -> None:
    _, folder = audit
    broken = tmp_path / folder.name
    shutil.copytree(folder, broken)
    metrics = json.loads((broken / "metrics.json").read_text())
    metrics["accuracy"]["value"] = 1.5
    (broken / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(AssertionError, match=r"metrics\.json breaks its schema"):
        check_run_folder(broken)
    shutil.copy(folder / "metrics.json", broken / "metrics.json")
    (broken / "report.html").write_text("changed")
    with pytest.raises(AssertionError, match=r"report\.html"):
        check_run_folder(broken)


def test_predictions_keep_metadata_and_the_corrupt_file_is_listed(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    assert {"path", "label", "prediction", "confidence", "correct", "site", "sha256"} <= set(
        predictions.columns
    )
    assert set(predictions["site"]) == {"A", "B"}
    excluded = pd.read_csv(folder / "excluded.csv")
    assert excluded["path"].tolist() == ["images/corrupt.png"]
    assert "cannot decode image" in excluded["reason"].iloc[0]


def test_misclassified_images_are_explained_for_both_classes(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    records = pd.read_csv(folder / "explanations.csv", keep_default_na=False)
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False).set_index("index")
    wrong = records[records["group"] == "misclassified"]
    assert len(wrong), "an untrained model misclassifies some of 12 images"
    for index, rows in wrong.groupby("index"):
        assert set(rows["role"]) == {"predicted", "true"}
        assert set(rows.loc[rows["role"] == "true", "target"]) == {predictions.loc[index, "label"]}
    from auditor.explain import METHODS

    assert set(records["method"]) == set(METHODS), "TinyNet has a GAP + linear head and ReLUs"
    assert (records["status"] == "ok").all()


def test_explanations_npz_layout(audit: tuple[Result, Path]) -> None:
    import numpy as np

    _, folder = audit
    with np.load(folder / "explanations.npz") as saved:
        records = pd.read_csv(folder / "explanations.csv", keep_default_na=False)
        assert saved["maps"].shape == (len(records), 32, 32)
        assert saved["maps"].dtype == np.float32
        assert saved["method"].tolist() == records["method"].tolist()
        assert saved["image"].tolist() == records["path"].tolist()
        grad_cam = saved["maps"][saved["method"] == "grad-cam"]
        assert (grad_cam >= 0).all(), "Grad-CAM keeps its ReLU"
        cam = saved["maps"][saved["method"] == "cam"]
        assert (cam < 0).any(), "CAM keeps negative evidence"


def test_features_npz_layout(audit: tuple[Result, Path]) -> None:
    import numpy as np

    _, folder = audit
    with np.load(folder / "features.npz") as saved:
        assert saved["filters"].shape == (6, 3, 3, 3), "TinyNet's first conv: 6 filters, 3×3, RGB"
        assert saved["filters"].min() == 0.0 and saved["filters"].max() == 1.0
        assert saved["stages"].tolist() == ["features.2", "features"]
        for index in saved["images"]:
            assert saved[f"maps_{index}_0"].shape == (4, 32, 32)
            assert saved[f"maps_{index}_1"].shape == (4, 16, 16)
            channels = saved[f"channels_{index}_1"]
            assert len(set(channels.tolist())) == 4 and channels.max() < 8


def test_last_stdout_line_is_the_run_folder(audit: tuple[Result, Path]) -> None:
    result, folder = audit
    assert result.stdout.strip().splitlines()[-1] == str(folder)
    assert folder.is_dir()


def test_a_state_dict_file_is_a_one_line_error(tmp_path: Path, manifest: Path) -> None:
    import torch

    weights = tmp_path / "weights.pt"
    torch.save(TinyNet().state_dict(), weights)
    result = invoke(
        "run", "--model", str(weights), "--data", str(manifest), "--out", str(tmp_path / "r")
    )
    one_line_error(result, "not TorchScript", "torch.jit.script")
    assert not (tmp_path / "r").exists(), "nothing is written for a bad model"


def test_a_class_count_mismatch_is_a_one_line_error(tmp_path: Path, manifest: Path) -> None:
    model = save_torchscript(TinyNet(outputs=5), tmp_path / "five.pt")
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--out", str(tmp_path / "r")
    )
    one_line_error(result, "outputs 5 scores", "2 classes")


def test_an_empty_folder_is_a_one_line_error(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("run", "--model", str(tiny_model), "--data", str(tmp_path / "empty"))
    one_line_error(result, "no images found")


def test_a_label_outside_the_class_list_is_a_one_line_error(
    tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--classes", "benign,other"
    )
    one_line_error(result, XSS_CLASS, "--classes")


def test_a_manifest_path_escaping_its_folder_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    write_png(tmp_path / "outside.png", 1)
    data = tmp_path / "data"
    write_png(data / "in.png", 2)
    manifest = write_manifest(
        data, [{"path": "in.png", "label": "a"}, {"path": "../outside.png", "label": "b"}]
    )
    result = invoke("run", "--model", str(tiny_model), "--data", str(manifest))
    one_line_error(result, "leaves the manifest's folder")


def test_only_corrupt_images_is_a_one_line_error(tmp_path: Path, tiny_model: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"\x89PNG broken")
    result = invoke("run", "--model", str(tiny_model), "--data", str(tmp_path))
    one_line_error(result, "can be read")


def test_usage_errors_exit_2(tiny_model: Path) -> None:
    assert invoke("run", "--batch-size", "many").exit_code == 2
    assert invoke("run", "--no-such-flag").exit_code == 2
    assert invoke("frobnicate").exit_code == 2


def test_a_bad_option_value_is_a_one_line_error(tiny_model: Path, manifest: Path) -> None:
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--mean", "0.5,x", "--std", "1"
    )
    one_line_error(result, "0.5,x")


def test_config_file_is_overridden_by_flags(
    tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(f'model = "{tiny_model}"\ndata = "{manifest}"\nbatch-size = 0\n')
    one_line_error(invoke("run", "--config", str(config)), "--batch-size", "at least 1")
    config.write_text(f'model = "{tiny_model}"\ndata = "{manifest}"\ntarget-layer = "classifier"\n')
    result = invoke("run", "--config", str(config), "--out", str(tmp_path / "r"))
    one_line_error(result, "target-layer 'classifier'", "features")


def test_profile_prints_the_module_table_and_totals(tiny_model: Path) -> None:
    result = invoke("profile", "--model", str(tiny_model), "--image-size", "16", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "features.0" in result.stdout and "Conv2d" in result.stdout
    assert "parameters          638" in result.stdout  # 168 + 12 + 440 + 18
    assert hashlib.sha256(tiny_model.read_bytes()).hexdigest() in result.stdout


def test_a_failure_while_writing_keeps_only_the_finished_stages_and_the_rerun_uses_them(
    tmp_path: Path, tiny_model: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.outputs

    def broken(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(auditor.outputs, "write_pdf", broken)
    out = tmp_path / "r"
    flags = ["--model", str(tiny_model), "--data", str(manifest), "--out", str(out)]
    result = invoke("run", *flags, "--explain-samples", "1")
    one_line_error(result, "disk full", "the finished stages are kept in")
    (partial,) = list(out.iterdir())
    assert partial.name.startswith(".") and partial.name.endswith(".partial")
    assert [p.name for p in partial.iterdir()] == ["checkpoint"], "no run-folder file is left"
    monkeypatch.undo()
    again = invoke("run", *flags, "--explain-samples", "1")
    assert again.exit_code == 0, again.output
    (folder,) = [path for path in out.iterdir() if path.is_dir()]  # beside the history
    assert folder == Path(again.stdout.strip().splitlines()[-1]) and folder.name[0] != "."
    assert folder.name == partial.name[1:].removesuffix(".partial")


def test_an_unwritable_out_folder_is_a_one_line_error_before_any_stage_runs(
    tmp_path: Path, tiny_model: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.pipeline

    def stages(*_: object) -> None:
        raise AssertionError("the stages ran before --out was checked")

    monkeypatch.setattr(auditor.pipeline, "load_inputs", stages)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke(
        "run",
        "--model",
        str(tiny_model),
        "--data",
        str(manifest),
        "--out",
        str(blocker / "r"),
        "--explain-samples",
        "1",
    )
    one_line_error(result, "cannot create a run folder", "--out")


def test_grayscale_single_logit_model_on_a_class_folder_with_resizing(tmp_path: Path) -> None:
    model = save_torchscript(TinyNet(in_channels=1, outputs=1), tmp_path / "gray.pt")
    data = tmp_path / "folder"
    for k, name in enumerate(["normal", "pneumonia"]):
        for i in range(4):
            write_png(data / name / f"{i}.png", seed=10 * k + i, size=24 + 4 * i, mode="L")
    (data / "notes.txt").write_text("not an image")
    result = invoke(
        "run",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--image-size",
        "16",
        "--mean",
        "0.5",
        "--std",
        "0.25",
        "--explain-samples",
        "2",
        "--maximise-steps",
        "8",
    )
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["output_kind"] == "binary_logit"
    assert metrics["n_images"] == 8 and metrics["classes"] == ["normal", "pneumonia"]
    assert pd.read_csv(folder / "excluded.csv")["reason"].tolist() == ["not inside a class folder"]
    html = (folder / "report.html").read_text()
    assert "a single binary logit (sigmoid applied)" in html
    assert "shorter side resized to 16 px" in html and "grayscale" in html
    import numpy as np

    with np.load(folder / "explanations.npz") as saved:
        assert saved["maps"].shape[1:] == (16, 16)


def test_methods_profile_and_the_pipeline_do_not_import_the_pdf_renderer(
    tiny_model: Path,
) -> None:
    """WeasyPrint (and Pango) load only when a PDF is written: an audit asked for HTML and
    Markdown alone runs where Pango is missing, such as on a GPU server."""
    profile = ["profile", "--model", str(tiny_model), "--image-size", "16", "--device", "cpu"]
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from auditor.cli import cli\n"
        f"for args in (['methods'], {profile!r}):\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('weasyprint', 'jinja2')))\n"
        "import auditor.pipeline, auditor.outputs\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'weasyprint'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "[]"]


def test_dependence_csv_is_recomputed_from_the_predictions(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    rates = pd.read_csv(folder / "dependence.csv", keep_default_na=False)
    metrics = json.loads((folder / "metrics.json").read_text())
    positive = metrics["metadata_dependence"]["positive_class"]

    assert positive == metrics["classes"][1]
    recount = predictions.groupby(["label", "site"])["prediction"].agg(
        n="size", positive=lambda p: int((p == positive).sum())
    )
    assert {(r.label, r.value): (r.n, r.positive) for r in rates.itertuples()} == {
        key: tuple(row) for key, row in recount.iterrows()
    }
    [site] = metrics["metadata_dependence"]["columns"]
    assert not site["finding"] and "too few to judge" in site["reason"], "6 images a class"
    html = (folder / "report.html").read_text()
    assert 'id="dependence"' in html and "too few to judge" in html


def test_the_operating_point_is_recomputed_from_the_predictions(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    operating = json.loads((folder / "metrics.json").read_text())["operating_point"]
    curves = pd.read_csv(folder / "curves.csv")
    positive = operating["positive_class"]

    is_positive = predictions["label"] == positive
    called = predictions[f"p_{positive}"] >= operating["threshold"]
    assert operating["threshold"] == 0.5 and operating["chosen_for"] is None
    assert (operating["sensitivity"]["hits"], operating["sensitivity"]["n"]) == (
        int((called & is_positive).sum()), int(is_positive.sum()),
    )  # fmt: skip
    assert (operating["specificity"]["hits"], operating["specificity"]["n"]) == (
        int((~called & ~is_positive).sum()), int((~is_positive).sum()),
    )  # fmt: skip
    assert set(curves["curve"]) == {"roc", "roc_band", "pr", "pr_band", "decision"}
    assert operating["auc"]["ci_low"] <= operating["auc"]["value"] <= operating["auc"]["ci_high"]


def test_subgroups_csv_is_recounted_from_the_predictions(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    groups = pd.read_csv(folder / "subgroups.csv", keep_default_na=False)
    fairness = json.loads((folder / "metrics.json").read_text())["fairness"]

    assert dict(zip(groups["value"], groups["n"], strict=True)) == (
        predictions["site"].value_counts().to_dict()
    )
    assert groups["too_few"].all() and fairness["disparities"] == [], "6 images a site"


def test_metrics_json_holds_the_subgroups_and_the_curves_bands_of_the_csvs(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    metrics = json.loads((folder / "metrics.json").read_text())
    subgroups = pd.read_csv(folder / "subgroups.csv", keep_default_na=False, dtype={"value": str})
    curves = pd.read_csv(folder / "curves.csv")

    assert [(g["column"], g["value"], g["n"]) for g in metrics["subgroups"]] == list(
        subgroups[["column", "value", "n"]].itertuples(index=False, name=None)
    )
    band = curves[curves["curve"] == "roc_band"]
    assert metrics["curves"]["roc_band_low"] == pytest.approx(band["band_low"].tolist())
    decision = curves[curves["curve"] == "decision"]
    assert metrics["curves"]["decision"]["model"] == pytest.approx(decision["model"].tolist())
