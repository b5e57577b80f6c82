"""Embeddings, projections, neighbours and leakage: the embedding fed through the head
gives the logits, projections keep clusters, a planted duplicate comes back, a variable
that organises the embedding is found and a random one is not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from auditor.config import resolve_config
from auditor.data import discover
from auditor.evaluate import EvaluationSettings, evaluate, run_model
from auditor.images import Preprocessing, make_loader
from auditor.load import OutputKind, load_model
from auditor.loading import load_inputs
from auditor.similarity.analysis import duplicate_threshold
from auditor.similarity.embeddings import embedding_site
from auditor.similarity.leakage import training_leakage
from auditor.similarity.neighbours import nearest, pairs_within, unit_rows
from auditor.similarity.projection import agreement, pca, stratified_sample, tsne, umap_projection
from auditor.similarity.settings import SimilaritySettings
from tests.helpers import (
    TinyNet,
    invoke,
    loaded_model,
    make_manifest_dataset,
    save_torchscript,
    torchscript_twin,
)


def _vit() -> nn.Module:
    return torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=3)


@pytest.mark.parametrize("kind", ["script", "trace"])
@pytest.mark.parametrize(
    ("build", "head"),
    [
        (TinyNet, "classifier"),
        (lambda: torchvision.models.resnet18(num_classes=3), "fc"),
        (_vit, "heads.head"),
    ],
    ids=["tiny", "resnet18", "vit"],
)
def test_the_embedding_fed_through_the_head_gives_the_logits(kind: str, build, head: str) -> None:
    torch.manual_seed(0)
    eager = build().eval()
    model = loaded_model(torchscript_twin(eager, kind, 32))
    site = embedding_site(model, None)
    assert site is not None and site.description.endswith(f"({head})")
    images = torch.rand(4, 3, 32, 32)

    with torch.no_grad():
        output, vectors = run_model(model, images, site)
        linear = eager.get_submodule(head)
        logits = nn.functional.linear(vectors, linear.weight, linear.bias)

    torch.testing.assert_close(logits, output, atol=1e-5, rtol=0)
    torch.testing.assert_close(output, eager(images), atol=1e-5, rtol=0)


def test_a_declared_layer_is_averaged_over_space_and_an_unknown_one_is_an_error() -> None:
    eager = TinyNet().eval()
    model = loaded_model(torchscript_twin(eager, "script", 32))
    site = embedding_site(model, "features")
    assert site is not None
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, vectors = run_model(model, images, site)
        torch.testing.assert_close(vectors, eager.features(images).mean(dim=(2, 3)))
    with pytest.raises(Exception, match="embedding-layer: module 'nope'"):
        embedding_site(model, "nope")


class _FullyConvolutional(nn.Module):
    """conv → ReLU → conv → ReLU → 1×1 conv to the classes → mean over space: no linear
    layer makes the output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.classify = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.body(self.stem(x))).mean(dim=(2, 3))


def test_without_a_linear_head_the_embedding_is_the_last_stage_before_the_class_maps(
    tmp_path: Path,
) -> None:
    eager = _FullyConvolutional().eval()
    path = tmp_path / "fcn.pt"
    torchscript_twin(eager, "script", 32).save(str(path))
    model = load_model(path, torch.device("cpu"))
    assert model.tapped.head_input[0] is None and embedding_site(model, None) is None
    data = discover(make_manifest_dataset(tmp_path / "data", per_class=4), None)
    config = resolve_config(None, {"model": path, "data": data.source, "device": "cpu"})

    site = load_inputs(config).site

    assert site is not None and "stem, the last spatial stage before" in site.description
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, vectors = run_model(model, images, site)
        torch.testing.assert_close(vectors, eager.stem(images).mean(dim=(2, 3)))


def test_the_evaluation_keeps_one_embedding_per_scored_image_in_the_predictions_order(
    tmp_path: Path,
) -> None:
    data = discover(make_manifest_dataset(tmp_path, per_class=5), None)
    eager = TinyNet().eval()
    model = load_model(save_torchscript(eager, tmp_path / "m.pt", "trace"), torch.device("cpu"))
    site = embedding_site(model, None)
    preprocessing = Preprocessing(3, None, None, None, size=(32, 32))
    settings = EvaluationSettings(batch_size=3)

    result = evaluate(model, data, preprocessing, OutputKind.LOGITS, settings, site)

    assert result.embeddings is not None
    assert result.embeddings.rows == len(result.predictions) == 10, "the corrupt file has none"
    stored = result.embeddings.rows_at(np.arange(10))
    samples = [data.samples[int(i)] for i in result.predictions["index"]]
    images = torch.cat([b.images for b in make_loader(samples, preprocessing, 4)])
    with torch.no_grad():
        features = eager.pool(eager.features(images)).flatten(1)
    np.testing.assert_allclose(stored, features.numpy(), atol=1e-5)
    written = tmp_path / "embeddings.npy"
    result.embeddings.write(written)
    np.testing.assert_array_equal(np.load(written), stored)


def _clusters(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(4, 32)) * 6
    labels = rng.integers(0, 4, size=n)
    return (centres[labels] + rng.normal(size=(n, 32))).astype(np.float32), labels


def test_projections_keep_the_clusters_neighbourhoods() -> None:
    vectors, _ = _clusters(300, np.random.default_rng(0))
    rows = np.arange(300)
    for projection in (pca(vectors, rows, 0), tsne(vectors, rows, 30.0, 0)):
        assert projection.trustworthiness >= 0.9, projection.method
    assert sum(pca(vectors, rows, 0).explained) <= 1.0 + 1e-6


def test_a_planted_duplicate_pair_are_mutual_first_neighbours_and_no_point_is_its_own() -> None:
    vectors, _ = _clusters(200, np.random.default_rng(1))
    vectors[57] = vectors[140] * 2.0  # same direction: cosine 1
    unit = unit_rows(vectors)
    found = nearest(unit, 5)
    threshold = duplicate_threshold(found, 0.02)
    pairs, similarity = pairs_within(unit, threshold)

    assert found.index[57, 0] == 140 and found.index[140, 0] == 57
    assert not (found.index == np.arange(200)[:, None]).any()
    assert pairs.tolist() == [[57, 140]], "only the planted pair is that close"
    assert similarity[0] == pytest.approx(1.0, abs=1e-6)
    assert 0.9 < threshold < 1.0


def test_a_variable_organising_the_embedding_beyond_the_class_is_found_a_random_one_not() -> None:
    rng = np.random.default_rng(2)
    n = 300
    labels = rng.integers(0, 2, size=n)
    site = rng.integers(0, 2, size=n)  # independent of the class
    vectors = np.zeros((n, 8), dtype=np.float32)
    vectors[:, 0] = labels * 4.0
    vectors[:, 1] = site * 4.0  # the embedding is organised by site as well
    vectors += rng.normal(size=(n, 8)).astype(np.float32)
    index = nearest(unit_rows(vectors - vectors.mean(0)), 10).index
    noise = pd.Series(rng.integers(0, 2, size=n).astype(str))

    organised = agreement("site", pd.Series(site.astype(str)), index, labels, 199, 0)
    control = agreement("noise", noise, index, labels, 199, 0)

    assert organised.p_value == pytest.approx(1 / 200) and organised.observed > 0.8
    assert organised.within_class and abs(organised.expected - 0.5) < 0.05
    assert control.p_value > 0.05 and abs(control.observed - control.expected) < 0.05


def test_a_stratified_sample_keeps_each_class_share() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    rows = stratified_sample(labels, 100, 0)
    assert len(rows) == 100 and (labels[rows] == 1).sum() == 10
    assert np.array_equal(stratified_sample(labels[:50], 100, 0), np.arange(50))


def test_training_images_that_duplicate_validation_ones_and_shared_patients_are_flagged(
    tmp_path: Path,
) -> None:
    validation = discover(make_manifest_dataset(tmp_path / "val", per_class=4), None)
    train_manifest = make_manifest_dataset(tmp_path / "train", per_class=3)
    # the training set's images are the validation set's first ones under other names:
    # make_manifest_dataset seeds images by position, so c0_0 is byte-identical in both
    train = discover(train_manifest, None)
    model = load_model(save_torchscript(TinyNet(), tmp_path / "m.pt"), torch.device("cpu"))
    site = embedding_site(model, None)
    assert site is not None
    preprocessing = Preprocessing(3, None, None, None, size=(32, 32))
    settings = SimilaritySettings(patient_column="patient", batch_size=4)
    kind = OutputKind.LOGITS
    result = evaluate(model, validation, preprocessing, kind, EvaluationSettings(), site)
    assert result.embeddings is not None

    leakage = training_leakage(
        model, train, preprocessing, site, result.embeddings.rows_at(np.arange(8)),
        result.predictions, settings, threshold=1.0,
    )  # fmt: skip

    assert leakage.images == 6 and leakage.unreadable == 1
    identical = leakage.pairs[leakage.pairs["identical"]]
    assert len(identical) == 6, "each training image is byte-identical to one validation image"
    assert (identical["cosine"] > 0.9999).all()
    assert set(identical["train_path"]) == set(identical["path"])
    assert identical["same_patient"].all()
    assert leakage.shared_patients == ("p0-0", "p0-1", "p1-0", "p1-1")


def test_the_run_folder_s_similarity_files_equal_a_recomputation_from_embeddings_npy(
    audit: tuple[object, Path],
) -> None:
    _, folder = audit
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    embeddings = np.load(folder / "embeddings.npy")
    assert embeddings.shape[0] == len(predictions) and embeddings.dtype == np.float32
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    k = 10
    nearest_rows = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
    labels = predictions["label"].to_numpy()
    shared = (labels[nearest_rows] == labels[:, None]).mean()

    agreement_csv = pd.read_csv(folder / "agreement.csv")
    by_variable = agreement_csv.set_index("variable")
    assert by_variable.loc["class", "observed"] == pytest.approx(shared, abs=1e-9)
    assert set(by_variable.index) >= {"class", "correct"}
    metrics = json.loads((folder / "metrics.json").read_text())["similarity"]
    assert [a["variable"] for a in metrics["agreement"]] == list(agreement_csv["variable"])
    assert metrics["dimensions"] == embeddings.shape[1]

    duplicates = pd.read_csv(folder / "duplicates.csv")
    threshold = 1 - 0.02 * np.median(1 - cosine.max(axis=1).astype(np.float64))
    assert metrics["duplicate_cosine"] == pytest.approx(threshold, abs=1e-6)
    i, j = np.nonzero(np.triu(cosine >= threshold, 1))
    same_file = predictions["sha256"].to_numpy()
    identical = {
        (a, b) for a in range(len(predictions)) for b in range(a + 1, len(predictions))
        if same_file[a] == same_file[b]
    }  # fmt: skip
    expected = sorted(set(zip(i.tolist(), j.tolist(), strict=True)) | identical)
    assert list(zip(duplicates["row_a"], duplicates["row_b"], strict=True)) == expected
    assert metrics["near_duplicates"] == len(expected)

    neighbours = pd.read_csv(folder / "neighbours.csv")
    first = neighbours[neighbours["rank"] == 1]
    assert len(first) > 0
    for case, row, value in zip(first["case_row"], first["row"], first["cosine"], strict=True):
        assert case != row and value == pytest.approx(cosine[case].max(), abs=1e-5)


def test_umap_joins_the_projections_when_umap_learn_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``umap-learn`` importable (here a stand-in that records how it was called and
    places points by PCA), UMAP is one more projection with its trustworthiness; without
    it, none."""
    import importlib.util
    import sys
    import types

    vectors, _ = _clusters(120, np.random.default_rng(3))
    rows = np.arange(120)
    if importlib.util.find_spec("umap") is None:
        assert umap_projection(vectors, rows, 0) is None
    calls: list[dict[str, object]] = []

    class StandIn:
        def __init__(self, **options: object) -> None:
            calls.append(options)

        def fit_transform(self, x: np.ndarray) -> np.ndarray:
            return pca(x, np.arange(len(x)), 0).points

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=StandIn))
    found = umap_projection(vectors, rows, 7)

    assert found is not None and found.method == "UMAP" and found.trustworthiness >= 0.9
    assert calls == [{"n_components": 2, "n_neighbors": 15, "metric": "cosine", "random_state": 7}]


def test_a_training_set_given_on_the_command_line_is_checked_for_leakage(
    tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    """--train-data (here the validation manifest itself): every training image is a
    byte-identical copy of a validation image, each patient is in both sets, and the
    summary says so with the figures of leakage.csv."""
    config = tmp_path / "audit.toml"
    config.write_text(
        "robustness-images = 0\nbootstrap = 100\ndissection-images = 0\ncounterfactual-images = 0\n"
    )
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path / "o"),
        "--config", str(config), "--explain-samples", "0", "--format", "md",
        "--train-data", str(manifest), "--patient-column", "patient",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    leakage = pd.read_csv(folder / "leakage.csv", keep_default_na=False)
    identical = leakage[leakage["identical"]]
    assert len(identical) == 12 and (identical["train_path"] == identical["path"]).all()
    assert identical["same_patient"].all()
    metrics = json.loads((folder / "metrics.json").read_text())["similarity"]["leakage"]
    assert metrics == {
        "training_images": 12, "pairs": len(leakage), "identical": 12, "shared_patients": 6,
    }  # fmt: skip
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    trained = leakage["train_path"].nunique()
    assert f"Possible leakage: {trained} of the 12 training images nearly duplicate" in summary
    assert "6 patients (patient) are in both sets" in summary
