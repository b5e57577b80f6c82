"""Trust checks end to end: a model that only sees a known region, and a bad explainer.

``RegionNet`` decides from one square of the image only (a learned spatial weight, 1
inside the square and 0 outside, gates its features): every method that beats a random
ranking must put its evidence in that square, and randomising the model's weights must
break the maps. An edge detector that ignores the model is registered here only: the
randomisation check must fail it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from auditor.explain import Batch, ExplainContext, ExplainSettings, Method
from auditor.explain.batching import attribute_batch
from auditor.explain.engine import build_context
from auditor.explain.store import MapStore
from auditor.images import Preprocessing
from auditor.load import OutputKind
from auditor.measure import TrustCase, TrustSettings
from auditor.measure.checks import randomisation_check
from auditor.measure.randomisation import cascade
from auditor.measure.verdicts import verdict_table
from tests.helpers import (
    invoke,
    loaded_model,
    save_torchscript,
    smooth_images,
    torchscript_twin,
    varied_tiny_net,
    write_manifest,
)

SIZE = 32
REGION = (slice(4, 14), slice(18, 28))


class Gate(nn.Module):
    """Multiplies its input by a learned ``(1, 1, H, W)`` weight."""

    def __init__(self) -> None:
        super().__init__()
        weight = torch.zeros(1, 1, SIZE, SIZE)
        weight[..., REGION[0], REGION[1]] = 1.0
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class RegionNet(nn.Module):
    """conv → ReLU → gate (only ``REGION`` passes) → global average pool → linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.gate = Gate()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.gate(self.features(x))).flatten(1))


def _calibrated(net: RegionNet, images: torch.Tensor) -> RegionNet:
    """Scale the classifier so the logits spread about ±2 on ``images`` and a black image
    scores 50:50 (so that deleting pixels to black removes evidence for either class)."""
    with torch.no_grad():
        features = net.pool(net.gate(net.features(images))).flatten(1)
        logits = net.classifier(features)
        net.classifier.weight.mul_(2.0 / (logits[:, 1] - logits[:, 0]).std())
        black = net.pool(net.gate(net.features(torch.zeros(1, 3, SIZE, SIZE)))).flatten(1)
        net.classifier.bias.sub_(net.classifier(black)[0])
    return net


def _region_data(folder: Path, model: nn.Module, images: torch.Tensor) -> Path:
    """``images`` labelled with the model's own predictions (each map explains a confident
    class, whose probability deleting the region's pixels brings down to 50%)."""
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[REGION] = 255
    (folder / "images").mkdir(parents=True)
    Image.fromarray(mask).save(folder / "mask.png")
    rows = []
    for i, image in enumerate(images):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{i}.png")
        label = int(predicted[i])
        rows.append({"path": f"images/{i}.png", "label": "ab"[label], "mask": "mask.png"})
    return write_manifest(folder, rows)


def test_faithful_methods_find_the_region_the_model_reads_and_randomising_breaks_them(
    tmp_path: Path,
) -> None:
    images = smooth_images(16, SIZE, seed=5)
    net = _calibrated(RegionNet().eval(), images)
    model = save_torchscript(net, tmp_path / "region.pt")
    manifest = _region_data(tmp_path / "data", net, images)
    config = tmp_path / "audit.toml"
    config.write_text(
        'target-layer = "gate"\nexplain-samples = 10\ntrust-images = 4\n'
        "randomisation-steps = 2\nstability-samples = 2\nlime-samples = 64\n"
        "shap-samples = 64\nsuperpixels = 24\nig-steps = 16\nsmoothgrad-samples = 4\n"
    )
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--config", str(config),
        "--out", str(tmp_path / "out"), "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    trust = pd.read_csv(folder / "trust.csv").set_index("method")
    faithful = trust[trust["faithfulness"] == "better than random"]
    assert len(faithful) >= 10, trust["faithfulness"].to_dict()
    for method, row in faithful.iterrows():
        # the region is 10% of the image; superpixels (LIME, KernelSHAP) straddle its border
        assert row["localisation"] == "localises", (method, row["energy_in_mask"])
        assert row["energy_in_mask"] > 3 * row["mask_area"], (method, row["energy_in_mask"])
        assert row["pointing_game"] >= 0.9, (method, row["pointing_game"])
        assert row["randomisation"] == "passes", (method, row["randomisation_spearman"])
    assert trust["mask_area"].iloc[0] == np.float64(100 / SIZE**2)
    records = pd.read_csv(folder / "trust_records.csv", keep_default_na=False)
    steps = records.loc[records["measure"] == "spearman", "step"].unique().tolist()
    assert steps == ["classifier", "features.0"], "output layer first, then the whole model"


class EdgeDetector(Method):
    """Sobel edge strength of the image: a map that ignores the model entirely."""

    key = "edges"
    title = "Edge detector"
    paper = "none (a test double)"
    postprocessing: ClassVar[tuple[str, ...]] = ()
    reading = caveat = implementation = "test only"

    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        gray = batch.display.mean(dim=1, keepdim=True)
        sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)
        edges = nn.functional.conv2d(gray, kernels, padding=1)
        return edges.pow(2).sum(dim=1).sqrt()


def test_an_explainer_that_ignores_the_model_fails_the_randomisation_check() -> None:
    model = loaded_model(torchscript_twin(varied_tiny_net(), "script", SIZE))
    settings = ExplainSettings(methods=("grad-cam",))
    context, methods, _ = build_context(
        model, OutputKind.LOGITS, "features", settings, Preprocessing(3)
    )
    methods = [*methods, EdgeDetector(settings)]
    display = smooth_images(6, SIZE, seed=1)
    targets = torch.tensor([0, 1, 0, 1, 0, 1])
    seeds = list(range(6))
    maps = attribute_batch(context, methods, display, targets, seeds)
    cases = [TrustCase(i, "sampled", "predicted", int(targets[i]), display[i]) for i in range(6)]
    original = MapStore()
    for key, found in maps.items():
        for case in cases:
            original.put(case, key, np.asarray(found)[case.index])
    steps = cascade(model, {}, 3)
    records, example = randomisation_check(
        context, methods, cases, ("a", "b"), original, steps, TrustSettings(), batch_size=6
    )
    verdicts = verdict_table(records, ("grad-cam", "edges"), steps[-1].label, 0.5, 0.5)
    table = verdicts.set_index("method")
    assert table.loc["edges", "randomisation"] == "fails"
    assert table.loc["edges", "randomisation_spearman"] == 1.0
    assert str(table.loc["edges", "verdict"]).startswith("Do not read its maps for this model")
    assert table.loc["grad-cam", "randomisation"] == "passes"
    assert table.loc["grad-cam", "randomisation_spearman"] < 0.5
    assert set(example) == {(s.label, k) for s in steps for k in ("grad-cam", "edges")}
