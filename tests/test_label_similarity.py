"""A multi-label model's embedding: analysed as a single-label model's, its images grouped
by their set of labels where a single-label model's are by their class.

The scanner audit (conftest.scanner_audit): half its images come from a scanner X that
prints a mark in the first label's channel, which the model's pooled features carry, so
the embedding groups images by scanner beyond their labels; its site column alternates
with the images' label sets and cannot be told from them (the negative control).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from auditor.aggregate.similarity import _alone, _panel
from auditor.policy import evaluate_policy, parse_policy
from auditor.report.format import p_value, whole_percent
from auditor.similarity.projection import Projection, stratified_sample
from tests.helpers import invoke


def _nearest(folder: Path, k: int = 10) -> np.ndarray:
    """Each image's ``k`` nearest others by cosine, from ``embeddings.npy``."""
    embeddings = np.load(folder / "embeddings.npy").astype(np.float64)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    return np.argsort(-cosine, axis=1, kind="stable")[:, :k]


def test_the_agreements_are_recounted_from_embeddings_npy(scanner_audit: Path) -> None:
    predictions = pd.read_csv(scanner_audit / "predictions.csv", keep_default_na=False)
    agreement = pd.read_csv(scanner_audit / "agreement.csv").set_index("variable")
    nearest = _nearest(scanner_audit)

    assert list(agreement.index) == ["set of labels", "correct", "site", "scanner"]
    for variable, column in (("set of labels", "label"), ("scanner", "scanner")):
        values = predictions[column].to_numpy()
        shared = (values[nearest] == values[:, None]).mean()
        assert agreement.loc[variable, "observed"] == pytest.approx(shared, abs=1e-9)
    assert not agreement.loc["set of labels", "within_class"]
    assert agreement.loc["scanner", "within_class"]


def test_the_scanner_organises_the_embedding_beyond_the_labels_and_the_site_does_not(
    scanner_audit: Path,
) -> None:
    agreement = pd.read_csv(scanner_audit / "agreement.csv").set_index("variable")
    scanner, site = agreement.loc["scanner"], agreement.loc["site"]
    summary = (scanner_audit / "summary.md").read_text(encoding="utf-8")
    metrics = json.loads((scanner_audit / "metrics.json").read_text(encoding="utf-8"))

    assert scanner["p_holm"] < 0.05 and scanner["observed"] > scanner["expected"]
    assert site["p_holm"] >= 0.05  # constant within each set of labels
    assert (
        f"**Embedding.** The embedding groups images by scanner beyond their set of labels: "
        f"{whole_percent(scanner['observed'])} of an image's 10 nearest neighbours share its "
        f"value, against {whole_percent(scanner['expected'])} with the values permuted within "
        f"each set of labels (p = {p_value(scanner['p_holm'])}, Holm over 2 variables)."
    ) in summary
    assert "by site" not in summary
    assert metrics["schema_version"] == 16
    assert [a["variable"] for a in metrics["similarity"]["agreement"]] == list(agreement.index)
    criteria = parse_policy({"findings.embedding_organised_by": "== 0"}, "test")
    [failed] = evaluate_policy(criteria, metrics, None).failed
    assert failed.reason.startswith("1 is not == 0")


def test_the_report_shows_the_embedding(scanner_audit: Path) -> None:
    html = (scanner_audit / "report.html").read_text(encoding="utf-8")

    assert 'id="similarity"' in html and "permuted within each set of labels" in html
    assert 'alt="Every projection of the embedding coloured by every variable"' in html


def test_a_sample_of_many_sets_of_labels_keeps_each_set_and_every_part_of_the_data() -> None:
    """The reviewer's case: 442 sets of labels among 5,000 images and 2,000 places. One
    row for each small set overshot the places, and the sorted rows were cut: the last
    365 images were never placed."""
    labels = np.random.default_rng(0).integers(0, 442, 5000)

    rows = stratified_sample(labels, 2000, seed=0)

    assert len(rows) == len(np.unique(rows)) == 2000
    assert set(labels[rows]) == set(labels)
    quarters = np.histogram(rows, bins=4, range=(0, 5000))[0]
    assert quarters.min() > 400, quarters
    assert stratified_sample(labels, 300, seed=0).size == 300  # more sets than places


def test_a_panel_draws_every_image_and_colours_the_most_frequent_values_apart() -> None:
    values = pd.Series([f"set{k % 30}" for k in range(300)] + ["set0"] * 50)
    points = np.random.default_rng(0).normal(size=(350, 2)).astype(np.float32)
    projection = Projection("PCA", np.arange(350), points, (0.5, 0.2), 1.0, "PCA")

    figure = Figure()
    axes = figure.add_subplot()
    _panel(axes, projection, values, "PCA: set of labels")

    drawn = sum(len(c.get_offsets()) for c in axes.collections)
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert drawn == 350
    assert len(legend) == 20 and legend[-1] == "11 others" and "set0" in legend


def test_images_alone_in_their_set_of_labels_are_said() -> None:
    lone = SimpleNamespace(alone=12, stratum="set of labels")

    sentence = _alone(lone, 40)  # type: ignore[arg-type]

    assert sentence.startswith("12 of the 40 images are alone in their set of labels")
    assert "tested on the other 28" in sentence
    assert _alone(SimpleNamespace(alone=0, stratum="class"), 40) == ""  # type: ignore[arg-type]


def test_a_multi_label_training_set_is_checked_for_leakage(
    label_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """--train-data with a multi-label manifest (here the validation manifest itself):
    its label cells are read as sets of labels, every training image is a byte-identical
    copy of a validation image, each patient is in both sets, and page one says so with
    the figures of leakage.csv."""
    model, manifest = label_data
    config = tmp_path / "audit.toml"
    config.write_text(
        "robustness-images = 0\nbootstrap = 100\ndissection-images = 0\n"
        "counterfactual-images = 0\nmaximise-steps = 0\n"
    )
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--out", str(tmp_path / "o"),
        "--config", str(config), "--explain-samples", "0", "--format", "md",
        "--train-data", str(manifest), "--patient-column", "patient",
    )  # fmt: skip

    assert result.exit_code == 0, result.output + (result.stderr or "")
    folder = Path(result.stdout.strip().splitlines()[-1])
    leakage = pd.read_csv(folder / "leakage.csv", keep_default_na=False)
    identical = leakage[leakage["identical"]]
    assert len(identical) == 24 and (identical["train_path"] == identical["path"]).all()
    assert identical["same_patient"].all()
    metrics = json.loads((folder / "metrics.json").read_text())["similarity"]["leakage"]
    assert metrics == {
        "training_images": 24, "pairs": len(leakage), "identical": 24, "shared_patients": 12,
    }  # fmt: skip
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    trained = leakage["train_path"].nunique()
    assert f"Possible leakage: {trained} of the 24 training images nearly duplicate" in summary
    assert "12 patients (patient) are in both sets" in summary
