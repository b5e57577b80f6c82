"""The operating point of a multi-label model, label by label (auditor.multilabel.
operating): each label's figures equal the single-label path's at the label's threshold,
a label no image has is said as unread, each label draws its own stream, and the
scanner audit (tests.labels) writes curves and predictive values that a recount of its
``predictions.csv`` gives."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from auditor.aggregate.label_operating import _not_applied
from auditor.clinical.operating import operating_point
from auditor.clinical.settings import ClinicalSettings
from auditor.multilabel.evaluation import label_matrix
from auditor.multilabel.operating import label_operating
from auditor.resample import Resampling
from tests.helpers import invoke, save_torchscript
from tests.labels import LABELS, ChannelLabels, make_label_dataset

NAMES = ("a", "b", "c")
THRESHOLDS = (0.5, 0.3, 0.5)


def _predictions(seed: int, n: int = 200) -> pd.DataFrame:
    """``n`` images with labels ``a`` and ``b`` present with probability 0.4 and ``c``
    on none; probabilities that separate them imperfectly."""
    rng = np.random.default_rng(seed)
    has = rng.random((n, 3)) < [0.4, 0.4, 0.0]
    p = np.clip(np.where(has, 0.7, 0.3) + rng.normal(0, 0.2, (n, 3)), 0.01, 0.99)
    called = p >= np.array(THRESHOLDS)

    def cells(rows: np.ndarray) -> list[str]:
        return [";".join(x for x, on in zip(NAMES, r, strict=True) if on) or "-" for r in rows]

    columns = {f"p_{name}": p[:, j] for j, name in enumerate(NAMES)}
    return pd.DataFrame({"label": cells(has), "prediction": cells(called), **columns})


def test_each_label_s_figures_equal_the_single_label_path_at_its_threshold() -> None:
    frame, settings = _predictions(0), ClinicalSettings(target_sensitivity=0.9, prevalence=0.1)
    found = label_operating(frame, NAMES, THRESHOLDS, settings, 300, Resampling())

    has = label_matrix(frame["label"], NAMES)
    for j, name in enumerate(NAMES[:2]):
        single = pd.DataFrame(
            {"label": np.where(has[:, j], name, "no"), f"p_{name}": frame[f"p_{name}"]}
        )
        declared = dataclasses.replace(
            settings, threshold=THRESHOLDS[j], target_sensitivity=None, prevalence=None
        )
        want = operating_point(single, name, declared, 300, Resampling())
        got = found[j]
        assert got is not None and want is not None
        assert got.threshold == THRESHOLDS[j] and not got.chosen_for  # never chosen here
        assert got.prevalence is None and got.ppv_at_prevalence is None
        for measure in ("sensitivity", "specificity", "ppv", "npv"):
            assert getattr(got, measure) == getattr(want, measure)  # Wilson: exact
        assert got.auc[0] == want.auc[0] and got.average_precision[0] == want.average_precision[0]
        for ours, theirs in zip(got.roc, want.roc, strict=True):
            np.testing.assert_array_equal(ours, theirs)
        called = frame[f"p_{name}"].to_numpy() >= THRESHOLDS[j]
        assert got.ppv.hits == (called & has[:, j]).sum() and got.ppv.n == called.sum()
    assert found[2] is None  # no image has c


def test_each_label_draws_its_own_stream() -> None:
    frame = _predictions(1)
    twin = frame.assign(p_b=frame["p_a"])
    twin["label"] = [
        ";".join(n for n in ("a", "b") if "a" in cell.split(";")) or "-" for cell in frame["label"]
    ]
    a, b, _ = label_operating(twin, NAMES, (0.5, 0.5, 0.5), ClinicalSettings(), 300, Resampling())
    assert a is not None and b is not None
    assert a.auc[0] == b.auc[0] and a.auc[1:] != b.auc[1:]


def test_the_scanner_audit_s_curves_and_predictive_values_as_recounted(
    scanner_audit: Path,
) -> None:
    predictions = pd.read_csv(scanner_audit / "predictions.csv", keep_default_na=False)
    curves = pd.read_csv(scanner_audit / "curves.csv")
    metrics = json.loads((scanner_audit / "metrics.json").read_text())
    has = label_matrix(predictions["label"], LABELS)
    calls = label_matrix(predictions["prediction"], LABELS)

    assert curves.columns[0] == "label" and set(curves["label"]) == set(LABELS)
    documents = {d["label"]: d for d in metrics["label_operating"]}
    assert list(documents) == list(LABELS)
    for j, name in enumerate(LABELS):
        roc = curves[(curves["label"] == name) & (curves["curve"] == "roc")]
        fpr, tpr, _ = roc_curve(has[:, j], predictions[f"p_{name}"])
        np.testing.assert_allclose(roc["fpr"], fpr)
        np.testing.assert_allclose(roc["tpr"], tpr)
        ppv, npv = documents[name]["ppv"], documents[name]["npv"]
        assert (ppv["hits"], ppv["n"]) == ((calls[:, j] & has[:, j]).sum(), calls[:, j].sum())
        assert (npv["hits"], npv["n"]) == ((~calls[:, j] & ~has[:, j]).sum(), (~calls[:, j]).sum())

    html = (scanner_audit / "report.html").read_text()
    section = html[html.index('id="label-operating"') :]
    assert "ROC curves of effusion, nodule, pneumothorax" in section
    effusion = documents["effusion"]["ppv"]
    assert f"{effusion['hits']} of {effusion['n']}" in section


def test_single_label_settings_declared_are_said_as_not_applied_to_the_labels() -> None:
    declared = ClinicalSettings(prevalence=0.05, target_sensitivity=0.9)
    assert _not_applied(declared) == ("prevalence = 0.05", "target-sensitivity = 0.9")
    assert _not_applied(ClinicalSettings()) == ()


def test_a_label_called_on_no_image_and_patients_resampled_are_said(tmp_path: Path) -> None:
    manifest = make_label_dataset(tmp_path / "data", n=24)
    model = save_torchscript(ChannelLabels(), tmp_path / "labels.pt")
    config = tmp_path / "audit.toml"
    config.write_text('label-thresholds = [0.5, 0.999, 0.5]\npatient-column = "patient"\n')
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--config", str(config),
        "--out", str(tmp_path / "runs"), "--explain-samples", "1", "--methods", "saliency",
        "--format", "html", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + (result.stderr or "")
    folder = Path(result.stdout.strip().splitlines()[-1])
    metrics = json.loads((folder / "metrics.json").read_text())

    nodule = next(d for d in metrics["label_operating"] if d["label"] == "nodule")
    assert nodule["threshold"] == 0.999 and nodule["ppv"]["n"] == 0
    html = (folder / "report.html").read_text()
    section = html[html.index('id="label-operating"') :]
    assert "no image called" in section
    assert "95% intervals (bootstrap over patient)" in section
