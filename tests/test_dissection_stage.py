"""The dissection stage on a TorchScript file: a unit that reads a painted spot is labelled
with the spot's concept, through the tap layer, from manifest mask columns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import Result
from PIL import Image
from torch import nn

from auditor.concepts.data import computed_masks, split_concepts
from auditor.concepts.settings import ConceptSettings
from auditor.concepts.stage import dissect_network
from auditor.concepts.tcav_stage import ConceptTests, concept_tests
from auditor.data import Dataset, discover
from auditor.errors import ConfigError
from auditor.explain.features import Stage
from auditor.images import model_preprocessing
from tests.helpers import invoke, loaded_model, one_line_error, torchscript_twin, write_manifest

SIZE = 32


class SpotNet(nn.Module):
    """Unit 0 of ``features`` is the red channel minus the others (the painted spot);
    units 1-3 read green, blue and the lack of red (the background)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AvgPool2d(4))
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            weights = [[2.0, -1.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.5, 0.5]]
            self.features[0].weight.copy_(torch.tensor(weights).view(4, 3, 1, 1))
            self.features[0].bias.zero_()
            self.head.weight.copy_(torch.eye(2, 4))  # class k: the mean of unit k
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _spot_data(folder: Path, n: int = 24) -> Path:
    """``n`` images with a red spot (its mask ``spot``), the top-left quadrant as a mask
    ``other`` in two of three, and a random 3-pixel box ``speck`` that nothing reads."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        pixels = rng.uniform(0.3, 0.6, size=(SIZE, SIZE, 3))
        spot = np.zeros((SIZE, SIZE), dtype=bool)
        top, left = rng.integers(0, SIZE - 8, size=2)
        spot[top : top + 8, left : left + 8] = True
        pixels[spot] = (0.95, 0.1, 0.1)
        other = np.zeros_like(spot)
        other[: SIZE // 2, : SIZE // 2] = True
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"images/{i}.png")
        Image.fromarray(spot.astype(np.uint8) * 255).save(folder / f"masks/spot{i}.png")
        Image.fromarray(other.astype(np.uint8) * 255).save(folder / f"masks/other{i}.png")
        speck = np.zeros_like(spot)
        top, left = rng.integers(0, SIZE - 3, size=2)
        speck[top : top + 3, left : left + 3] = True
        Image.fromarray(speck.astype(np.uint8) * 255).save(folder / f"masks/speck{i}.png")
        rows.append({
            "path": f"images/{i}.png", "label": "ab"[i % 2], "site": "xy"[i % 2],
            "spot": f"masks/spot{i}.png", "other": f"masks/other{i}.png" if i % 3 else "",
            "speck": f"masks/speck{i}.png",
        })  # fmt: skip
    return write_manifest(folder, rows)


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_the_unit_reading_the_spot_is_labelled_spot_and_no_other_unit_is(
    tmp_path: Path, kind: str
) -> None:
    dataset = discover(_spot_data(tmp_path))
    # The spot is 64 of 1,024 pixels: at a top quantile of that share the unit's mask can
    # cover it (at the default 0.005 its mask is a twelfth of the spot: IoU 0.08).
    settings = ConceptSettings(
        concepts=("spot", "other"), artifact_concepts=("spot",), dissection_quantile=0.06
    )
    stripped, data = split_concepts(dataset, settings)
    assert stripped.metadata_columns == ("site", "speck"), "concept columns are not subgroups"
    model = loaded_model(torchscript_twin(SpotNet(), kind, SIZE))
    preprocessing = model_preprocessing(stripped, 3, None, None, None)
    predictions = pd.DataFrame({"index": [s.index for s in stripped.samples]})

    result = dissect_network(
        model, stripped, data, preprocessing, predictions, (Stage("features", (4, 8, 8)),),
        dataclasses.replace(settings, batch_size=5),
    )  # fmt: skip

    assert result is not None and result.passes == len(stripped.samples)
    assert result.concepts == ("spot", "other", "dark", "bright", "border")
    [layer] = result.layers
    assert layer.labels[0] == 0 and layer.dissection.iou[0, 0] > 0.5
    assert (layer.labels[1:] != 0).all(), "only the red unit reads the spot"
    n = len(stripped.samples)
    assert result.annotated[:2].tolist() == [n, n], "an empty cell is an absent concept"
    assert result.present[:2].tolist() == [n, sum(1 for i in range(n) if i % 3)]
    assert set(layer.top_images[0]) <= {s.index for s in stripped.samples}
    [shown] = [e for e in result.examples if e.unit == 0]  # the spot's unit, on its images
    for index, mask in zip(shown.indices, shown.concept_masks, strict=True):
        name = Path(stripped.samples[index].path).stem
        spot = np.asarray(Image.open(tmp_path / f"masks/spot{name}.png")) > 0
        np.testing.assert_array_equal(mask, spot)


def test_a_concept_that_is_no_column_is_a_one_line_error(tmp_path: Path) -> None:
    dataset = discover(_spot_data(tmp_path, 2))
    with pytest.raises(ConfigError, match=r"concepts \['marker'\] are not columns of .*"
                       r"\(its columns: mask, site, spot, other, speck\)"):  # fmt: skip
        split_concepts(dataset, ConceptSettings(concepts=("marker",)))
    with pytest.raises(ConfigError, match=r"artifact-concepts \['ruler'\] are not concepts"):
        split_concepts(dataset, ConceptSettings(concepts=("spot",), artifact_concepts=("ruler",)))


def test_the_computed_concepts_cover_what_their_names_say() -> None:
    images = torch.full((1, 3, 16, 16), 0.5)
    images[0, :, 0, 0] = 0.1
    images[0, :, 8, 8] = 0.9
    dark, bright, border = computed_masks(images, ("dark", "bright", "border"))[0]
    assert dark.sum() == 1 and dark[0, 0] and bright.sum() == 1 and bright[8, 8]
    assert border.sum() == 16 * 16 - 12 * 12 and not border[2:14, 2:14].any()


def _tcav_red_over_green(dataset: Dataset, settings: ConceptSettings, kind: str) -> ConceptTests:
    """TCAV at ``features.0`` of a SpotNet whose class a is the red excess minus green and
    class b is green, each image's true class from the data set."""
    stripped, data = split_concepts(dataset, settings)
    net = SpotNet()
    with torch.no_grad():
        net.head.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    model = loaded_model(torchscript_twin(net, kind, SIZE))
    preprocessing = model_preprocessing(stripped, 3, None, None, None)
    predictions = pd.DataFrame({
        "index": [s.index for s in stripped.samples],
        "label": [stripped.classes[s.label] for s in stripped.samples],
    })  # fmt: skip
    tests = concept_tests(model, stripped, data, preprocessing, predictions, "features.0", settings)
    assert tests is not None
    return tests


def test_tcav_finds_that_the_spot_raises_the_class_that_reads_red_over_green(
    tmp_path: Path,
) -> None:
    dataset = discover(_spot_data(tmp_path, 40))
    settings = ConceptSettings(
        concepts=("spot", "other"), computed_concepts=("bright", "dark"),
        artifact_concepts=("bright",), tcav_runs=5, tcav_images=20, tcav_pseudo=19, tcav_alpha=0.1,
    )  # fmt: skip
    # At the convolution, before its ReLU, the gradient differs from one image to the next.
    tests = _tcav_red_over_green(dataset, settings, "script")

    assert tests is not None and tests.concept_images == {"spot": 20, "other": 20}
    assert tests.notes == (("bright", "0 image(s) with a region of it, fewer than 5: not tested"),)
    rows = {(row.target, row.concept): row for row in tests.rows}
    assert rows["a", "spot"].score >= 0.95, "the spot is red, not green: a rises"
    assert rows["b", "spot"].score <= 0.05, "the spot has no green: b falls"
    assert all(1 / 20 <= row.p_value <= 1 for row in tests.rows)
    per_concept = 20 + 5 * 20 + 19 * 20  # the concept, 5 negative sets, 19 pseudo-concepts
    assert tests.passes == 2 * per_concept + 2 * 20 and tests.backward == 40


def test_concepts_nothing_reads_are_rarely_significant_whatever_their_shape(
    tmp_path: Path,
) -> None:
    """A quadrant and a 3-pixel speck of random images, against random images seen
    through the same regions: their p-values rank among pseudo-concepts of the same
    geometry, so they fall below 0.05 about as often as 0.05 says (random boxes as the
    null made small regions "significant" in 6 of 20 seeds)."""
    dataset = discover(_spot_data(tmp_path, 40))
    significant = 0
    for seed in range(20):
        settings = ConceptSettings(
            concepts=("other", "speck"), computed_concepts=(), tcav_runs=5, tcav_images=20,
            tcav_pseudo=39, seed=seed,
        )  # fmt: skip
        tests = _tcav_red_over_green(dataset, settings, "script")
        significant += sum(row.significant for row in tests.rows if row.target == "a")
    assert significant <= 5, f"{significant} of 40 null concepts significant at 0.05"


def test_concept_folders_are_tested_against_whole_images_and_bad_files_are_named(
    tmp_path: Path,
) -> None:
    dataset = discover(_spot_data(tmp_path / "data", 40))
    rng = np.random.default_rng(5)
    for name, n in (("red", 12), ("few", 3)):
        (tmp_path / "concepts" / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.uniform(0.0, 0.2, size=(20, 24, 3))  # another size than the model's
            pixels[..., 0] = rng.uniform(0.8, 1.0, size=(20, 24)) if name == "red" else 0.5
            Image.fromarray((pixels * 255).astype(np.uint8)).save(
                tmp_path / "concepts" / name / f"{i}.png"
            )
    (tmp_path / "concepts" / "few" / "broken.png").write_bytes(b"not an image")
    settings = ConceptSettings(
        computed_concepts=(), concept_dir=tmp_path / "concepts", artifact_concepts=("red",),
        tcav_runs=5, tcav_images=20, tcav_pseudo=19, tcav_alpha=0.1,
    )  # fmt: skip
    tests = _tcav_red_over_green(dataset, settings, "trace")

    assert tests is not None and tests.folders == ("few", "red")
    assert tests.concept_images == {"red": 12}
    assert tests.notes == (
        ("few", "1 unreadable file(s) left out"),
        ("few", "3 image(s) readable in its folder, fewer than 5: not tested"),
    )
    rows = {(row.target, row.concept): row for row in tests.rows}
    assert rows["a", "red"].score >= 0.95 and rows["b", "red"].score <= 0.05


def test_tcav_settings_that_cannot_give_a_verdict_are_one_line_errors(tmp_path: Path) -> None:
    dataset = discover(_spot_data(tmp_path / "data", 2))
    with pytest.raises(ConfigError, match=r"tcav-pseudo 19 cannot give a p-value below "
                       r"tcav-alpha 0.05 \(the smallest is 1/20\); raise tcav-pseudo to at "
                       r"least 20"):  # fmt: skip
        split_concepts(dataset, ConceptSettings(concepts=("spot",), tcav_pseudo=19))
    config = tmp_path / "audit.toml"
    config.write_text("[dissection]\ntcav-runs = 1\n", encoding="utf-8")
    result = invoke("run", "--config", str(config), "--model", "m.pt", "--data", "d")
    one_line_error(result, "tcav-runs", "must be 0 (no TCAV) or at least 2, got 1")


def test_a_concept_folder_named_as_another_concept_is_a_one_line_error(tmp_path: Path) -> None:
    dataset = discover(_spot_data(tmp_path / "data", 2))
    (tmp_path / "concepts" / "spot").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"has folders \['spot'\] named as declared or "
                       r"computed concepts; rename the folders"):  # fmt: skip
        split_concepts(
            dataset, ConceptSettings(concepts=("spot",), concept_dir=tmp_path / "concepts")
        )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "is not a folder; give a folder with one sub-folder"),
        (lambda root: root, "has no sub-folder; put each concept's images in a sub-folder"),
    ],
)
def test_a_concept_dir_that_is_no_folder_of_folders_is_a_one_line_error(
    tmp_path: Path,
    make,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    result = invoke("run", "--model", "m.pt", "--data", "d", "--concept-dir", str(make(tmp_path)))
    one_line_error(result, "concept-dir", message)


def test_the_shared_audit_tests_no_concept_and_keeps_its_maximised_images(
    audit: tuple[Result, Path],
) -> None:
    """No concept is declared and no computed one is an artefact: TCAV does not run
    (dissection does, on the computed concepts); the classes are still maximised."""
    _, folder = audit
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["tcav"] is None and not (folder / "tcav.csv").exists()
    assert metrics["dissection"] is not None
    with np.load(folder / "features.npz") as features:
        names = features["maximised_names"].tolist()
        values = features["maximised_values"]
        assert features["maximised"].shape[0] == len(names) == len(values)
    assert names[: len(metrics["classes"])] == [f"class {c}" for c in metrics["classes"]]
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "Concepts that move the score" not in html
    assert "What raises each class and unit most" in html
