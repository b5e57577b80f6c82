"""The concepts inside a multi-label model: network dissection, TCAV label by label and
activation maximisation of each label's score.

The scanner audit (conftest.py ``scanner_audit``) declares the mark scanner X prints in
effusion's channel (:data:`tests.labels.SCANNER_MARK`) an artefact concept; the model
with a known answer copies that channel into unit 0 of ``features``, so the unit's mask
is where the channel is saturated, and its IoU with the mark can be recomputed from the
images and masks alone.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from statsmodels.stats.multitest import multipletests

from auditor.aggregate.tcav import holm_judged
from auditor.concepts.data import split_concepts
from auditor.concepts.settings import ConceptSettings
from auditor.concepts.tcav import one_direction
from auditor.concepts.tcav_stage import TcavRow, concept_tests
from auditor.data import discover
from auditor.images import model_preprocessing
from auditor.load import OutputKind
from auditor.policy import evaluate_policy, parse_policy
from tests.helpers import loaded_model, torchscript_twin, write_manifest
from tests.labels import LABELS
from tests.test_dissection_stage import SIZE, SpotNet, _spot_data


def _manifest(folder: Path) -> pd.DataFrame:
    """The manifest of a run folder of ``scanner_audit``."""
    return pd.read_csv(folder.parent.parent / "data" / "manifest.csv", keep_default_na=False)


def test_the_unit_copying_effusions_channel_detects_the_mark_with_the_recomputed_iou(
    scanner_audit: Path,
) -> None:
    manifest = _manifest(scanner_audit)
    root = scanner_audit.parent.parent / "data"
    inter = union = 0
    for row in manifest.itertuples():
        saturated = np.asarray(Image.open(root / row.path))[..., 0] == 255
        mark = np.zeros_like(saturated)
        if row.mark_mask:
            mark = np.asarray(Image.open(root / row.mark_mask)) > 0
        inter += int((saturated & mark).sum())
        union += int((saturated | mark).sum())
    dissection = pd.read_csv(scanner_audit / "dissection.csv")

    unit = dissection.query("unit == 0 and concept == 'mark_mask'").iloc[0]
    assert unit["iou"] == pytest.approx(inter / union, abs=1e-6)
    assert unit["label"] and unit["threshold"] == 1.0, "the unit is saturated on the mark"
    best = dissection.loc[dissection.groupby("unit")["iou"].idxmax()]
    assert set(best.loc[best["label"], "unit"]) >= {0}
    assert not dissection.query("unit in (1, 2) and concept == 'mark_mask'")["label"].any(), (
        "the units copying nodule's and pneumothorax's channels do not read the mark"
    )


def test_page_one_states_the_artefact_units_as_recounted_and_the_policy_reads_them(
    scanner_audit: Path,
) -> None:
    dissection = pd.read_csv(scanner_audit / "dissection.csv")
    found = dissection.query("label and concept == 'mark_mask'").sort_values(
        "iou", ascending=False, kind="stable"
    )
    units = dissection["unit"].nunique()
    sentence = (
        f"{len(found)} of {units} units of features detect the artefact concept mark_mask "
        f"(best: unit {found.iloc[0]['unit']}, IoU {found.iloc[0]['iou']:.3f} over 64 images)."
    )
    html = (scanner_audit / "report.html").read_text(encoding="utf-8")
    page_one = html[html.index('id="label-summary"') : html.index("<h3>Labels</h3>")]
    summary = (scanner_audit / "summary.md").read_text(encoding="utf-8")

    assert f"<strong>Artefact units.</strong> {sentence}" in " ".join(page_one.split())
    assert f"**Artefact units.** {sentence.replace('_', chr(92) + '_')}" in summary
    metrics = json.loads((scanner_audit / "metrics.json").read_text())
    assert metrics["dissection"]["artifact_units"] == len(found) == 2
    [failed] = evaluate_policy(
        parse_policy({"findings.artifact_units": "== 0"}, "test"), metrics, None
    ).failed
    assert failed.reason.startswith(f"{len(found)} is not == 0")


def test_tcav_tests_each_label_and_says_so_in_the_labels_words(scanner_audit: Path) -> None:
    tcav = pd.read_csv(scanner_audit / "tcav.csv")
    html = (scanner_audit / "report.html").read_text(encoding="utf-8")
    section = unescape(
        " ".join(html[html.index('id="tcav"') : html.index('id="tcav-rows"')].split())
    )

    assert tcav["class"].tolist() == list(LABELS) and set(tcav["concept"]) == {"mark_mask"}
    # At the model's only spatial stage every image's gradient is the same (a pooled linear
    # head): TCAV scores are 0 or 1, and so are many pseudo-concepts'; it cannot judge.
    assert not tcav["significant"].any()
    metrics = json.loads((scanner_audit / "metrics.json").read_text())
    assert metrics["tcav"]["one_direction"] == list(LABELS)
    effusion = tcav.set_index("class").loc["effusion"]
    assert (
        "TCAV cannot judge whether the effusion score moves along the artefact concept "
        "mark_mask at features: there every image's gradient of the score points the same "
        f"way, so every direction, a concept's or a random one's, scores 0 or 1 (TCAV score "
        f"{effusion['score']:.2f}"
    ) in section
    assert "Not judged at <code>features</code>: effusion, nodule, pneumothorax." in section
    assert "does a label's score rise along" in section and "<th>Label</th>" in section
    assert "Artefact concept moves the score" not in html[: html.index('id="tcav"')]
    adjusted = multipletests(tcav["p_value"], method="holm")[1]
    for row, p in zip(tcav.itertuples(), adjusted, strict=True):
        assert f"{row.p_value:.3f} (39 pseudo-concepts; Holm-adjusted over 3 tests: {p:.3f})" in (
            section
        )
    assert (
        "With 39 pseudo-concepts the smallest p-value is 0.025, so adjusted over the 3 tests of "
        "an artefact concept none can fall below 0.05: raise tcav-pseudo to at least 60"
    ) in section
    assert 3 / (60 + 1) < 0.05 <= 3 / (59 + 1)


def _row(p_value: float) -> TcavRow:
    return TcavRow("a", "marker", 1.0, 1.0, 1.0, 0.1, 0.5, p_value, p_value < 0.05)


def test_an_artefact_finding_is_judged_after_holms_adjustment() -> None:
    three = holm_judged([_row(0.025), _row(0.025), _row(0.4)], 0.05)
    two = holm_judged([_row(0.01), _row(0.5)], 0.05)

    assert [p for p, _ in three] == pytest.approx([0.075, 0.075, 0.4])
    assert not any(flag for _, flag in three), "each p = 0.025 alone would be a finding"
    assert [p for p, _ in two] == pytest.approx([0.02, 0.5])
    assert [flag for _, flag in two] == [True, False]
    assert holm_judged([_row(0.03)], 0.05) == [(0.03, True)], "one test: nothing to adjust"


def test_each_labels_maximised_image_raises_its_score_past_every_image_of_the_data(
    scanner_audit: Path,
) -> None:
    features = np.load(scanner_audit / "features.npz")
    predictions = pd.read_csv(scanner_audit / "predictions.csv")
    names = features["maximised_names"].tolist()
    html = (scanner_audit / "report.html").read_text(encoding="utf-8")

    assert names[:3] == [f"label {name}" for name in LABELS]
    for k, name in enumerate(LABELS):
        p = predictions[f"p_{name}"].clip(1e-7, 1 - 1e-7)
        assert features["maximised_values"][k] > np.log(p / (1 - p)).max()
        channels = features["maximised"][k].mean(axis=(1, 2))
        assert channels.argmax() == k, f"{name}'s image is bright in its channel"
    assert "What raises each label and unit most" in html


def test_the_report_shows_the_concept_sections_and_nothing_as_not_run(
    scanner_audit: Path,
) -> None:
    summary = (scanner_audit / "summary.md").read_text(encoding="utf-8")
    html = (scanner_audit / "report.html").read_text(encoding="utf-8")

    assert "Not run" not in summary and "were not run" not in html
    assert {'id="dissection"', 'id="tcav"', 'id="features"'} <= set(re.findall(r'id="[^"]+"', html))


def _label_spots(folder: Path, n: int) -> Path:
    """:func:`_spot_data`'s images with labels: ``a`` on every fourth image, ``b`` on
    four of five, both on some, none on the rest."""
    manifest = _spot_data(folder, n)
    rows = pd.read_csv(manifest, keep_default_na=False).to_dict(orient="records")
    for i, row in enumerate(rows):
        row["label"] = ";".join(c for c, on in (("a", i % 4 == 0), ("b", i % 5 != 0)) if on)
        row["label"] = row["label"] or "-"
    return write_manifest(folder, rows)


def test_tcav_of_a_label_reads_the_images_that_have_it_and_its_own_score(
    tmp_path: Path,
) -> None:
    dataset = discover(_label_spots(tmp_path, 40))
    assert dataset.multi_label and dataset.classes == ("a", "b")
    settings = ConceptSettings(
        concepts=("spot",), computed_concepts=(), tcav_runs=5, tcav_images=20, tcav_pseudo=19,
        tcav_alpha=0.1,
    )  # fmt: skip
    stripped, data = split_concepts(dataset, settings)
    net = SpotNet()  # label a: the red excess minus green; label b: green
    with torch.no_grad():
        net.head.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    model = loaded_model(torchscript_twin(net, "script", SIZE))
    preprocessing = model_preprocessing(stripped, 3, None, None, None)
    labels = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)["label"]
    predictions = pd.DataFrame({"index": [s.index for s in stripped.samples], "label": labels})

    tests = concept_tests(
        model, stripped, data, preprocessing, predictions, "features.0", settings,
        OutputKind.LABEL_LOGITS,
    )  # fmt: skip

    assert tests is not None
    with_a = sum(1 for i in range(40) if i % 4 == 0)  # 10: fewer than tcav-images
    assert tests.backward == with_a + 20, "a label's images are those that have it"
    # a's score (red minus green) passes the ReLU on some pixels only: its gradients differ
    # image to image; b's (green) on every pixel: one gradient, so b cannot be judged here
    assert tests.one_direction == ("b",)
    rows = {(row.target, row.concept): row for row in tests.rows}
    assert rows["a", "spot"].score >= 0.95, "the spot is red, not green: a's score rises"
    assert rows["b", "spot"].score <= 0.05, "the spot has no green: b's score falls"
    assert all(1 / 20 <= row.p_value <= 1 for row in tests.rows)


def test_gradients_that_all_point_one_way_are_told_apart_from_others() -> None:
    rng = np.random.default_rng(0)
    same = np.outer(rng.uniform(0.5, 2.0, 8), rng.normal(size=5)).astype(np.float32)
    varied = same + rng.normal(0, 0.1, same.shape).astype(np.float32)

    assert one_direction(same) and not one_direction(varied)
    assert not one_direction(-same[:2] * [[1], [-1]]), "opposite ways"
    assert not one_direction(np.zeros((3, 5), dtype=np.float32)), "no gradient"
