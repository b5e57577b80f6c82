"""The robustness suite: perturbations, the stage's passes, and the paired comparison.

Two models with a known answer: one that reads a ratio of brightnesses (so multiplying
every pixel by a factor cannot change its calls) and one that reads a single pixel near
its decision boundary (so noise must flip it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as F

from auditor.data import discover
from auditor.evaluate import EvaluationSettings, evaluate, probe_output_kind
from auditor.images import model_preprocessing
from auditor.load import load_model
from auditor.resample import Resampling
from auditor.robustness import (
    PERTURBATIONS,
    Robustness,
    RobustnessSettings,
    perturbed_predictions,
    robustness_summary,
    variants,
)
from tests.helpers import save_torchscript, write_manifest

SIZE = 32


class BrightnessBlind(nn.Module):
    """Calls ``left`` when the left half is brighter than the right: a ratio of means."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = x[:, :, :, : x.shape[3] // 2].mean(dim=(1, 2, 3))
        right = x[:, :, :, x.shape[3] // 2 :].mean(dim=(1, 2, 3))
        ratio = torch.log(left) - torch.log(right)
        return torch.stack([-20 * ratio, 20 * ratio], dim=1)


class OnePixel(nn.Module):
    """Calls ``high`` when the top-left pixel's red value is above one half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixel = x[:, 0, 0, 0] - 0.5
        return torch.stack([-50 * pixel, 50 * pixel], dim=1)


class NanUnderNoise(nn.Module):
    """The one-pixel reading, but NaN when the image holds a value that is not a whole
    8-bit level (none does, read from a PNG, until noise is added)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixel = x[:, 0, 0, 0] - 0.5
        scores = torch.stack([-50 * pixel, 50 * pixel], dim=1)
        value = x * 255
        noisy = (value - torch.round(value)).abs().amax(dim=(1, 2, 3)) > 1e-3
        return torch.where(noisy[:, None], torch.full_like(scores, float("nan")), scores)


def _halves(folder: Path, n: int = 40) -> Path:
    """Images whose left half is brighter or darker than the right; labelled so."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        brighter = i % 2 == 0
        image = np.full((SIZE, SIZE, 3), 110, np.uint8)
        image[:, : SIZE // 2] = 160 if brighter else 70
        image = np.clip(image + rng.integers(-10, 11, image.shape), 1, 255).astype(np.uint8)
        path = folder / f"h{i}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": path.name, "label": "right" if not brighter else "left"})
    return write_manifest(folder, rows)


def _pixels(folder: Path, n: int = 60) -> Path:
    """Images whose top-left red value lies within 0.1 of one half; labelled by its side."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        value = int(rng.integers(103, 153))
        image[0, 0, 0] = value
        path = folder / f"p{i}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": path.name, "label": "high" if value / 255 > 0.5 else "low"})
    return write_manifest(folder, rows)


def _suite(model: nn.Module, manifest: Path, classes: tuple[str, ...]) -> Robustness:
    path = save_torchscript(model, manifest.parent / "model.pt")
    loaded = load_model(path, torch.device("cpu"))
    dataset = discover(manifest, classes)
    preprocessing = model_preprocessing(dataset, 3, None, None, None)
    kind = probe_output_kind(loaded, dataset, preprocessing)
    evaluation = evaluate(loaded, dataset, preprocessing, kind, EvaluationSettings(bootstrap=200))
    settings = RobustnessSettings(batch_size=16)
    perturbed = perturbed_predictions(
        loaded, dataset, preprocessing, kind, evaluation.predictions, settings, 1
    )
    assert perturbed is not None
    return robustness_summary(
        perturbed, evaluation.predictions, classes[1], 0.5, Resampling(), 500, 10
    )


def test_a_model_blind_to_brightness_flips_nothing_under_brightness(tmp_path: Path) -> None:
    robustness = _suite(BrightnessBlind(), _halves(tmp_path), ("right", "left"))

    assert robustness.clean_accuracy == 1.0
    brightness = [r for r in robustness.rows if r.perturbation == "brightness"]
    assert [r.severity for r in brightness] == [0.8, 0.6, 0.4]
    for row in brightness:
        assert row.flips.value == 0.0 and row.flips.ci_high == 0.0
        assert row.accuracy_change.value == 0.0
        assert not row.fragile
    assert "brightness" not in {r.perturbation for r in robustness.fragile()}


def test_a_model_reading_one_pixel_flips_under_noise_and_is_named_fragile(tmp_path: Path) -> None:
    robustness = _suite(OnePixel(), _pixels(tmp_path), ("low", "high"))

    assert robustness.clean_accuracy == 1.0
    noise = [r for r in robustness.rows if r.perturbation == "gaussian-noise"]
    flips = [r.flips.value for r in noise]
    assert flips == sorted(flips) and flips[-1] > 0.3  # more noise, more flips
    strongest = noise[-1]
    assert strongest.accuracy_change.value == pytest.approx(-strongest.flips.value)
    assert strongest.accuracy_change.ci_high < 0 and "accuracy" in strongest.fragile
    fragile = {r.perturbation: r for r in robustness.fragile()}
    assert "gaussian-noise" in fragile
    # The mildest fragile severity is named, not the strongest.
    assert fragile["gaussian-noise"].severity == min(r.severity for r in noise if r.fragile)


def test_every_perturbation_keeps_shape_and_range_and_has_its_declared_severities() -> None:
    images = torch.rand(3, 3, 24, 24)
    indices = torch.tensor([4, 7, 9])
    settings = RobustnessSettings()
    assert len(variants(settings)) == sum(len(getattr(settings, p.setting)) for p in PERTURBATIONS)
    for variant in variants(settings):
        out = variant.perturbation.apply(images, variant.severity, indices, 0)
        assert out.shape == images.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, images), variant.level


def test_noise_is_the_images_own_whatever_batch_it_falls_in() -> None:
    noise = next(p for p in PERTURBATIONS if p.name == "gaussian-noise")
    images = torch.rand(4, 3, 16, 16)
    together = noise.apply(images, 0.1, torch.tensor([0, 1, 2, 3]), 5)
    alone = noise.apply(images[2:3], 0.1, torch.tensor([2]), 5)
    other_seed = noise.apply(images[2:3], 0.1, torch.tensor([2]), 6)

    assert torch.equal(together[2:3], alone)
    assert not torch.equal(alone, other_seed)


def test_jpeg_is_torchvision_io_round_trip_and_brightness_is_a_product() -> None:
    images = torch.rand(2, 3, 16, 16)
    jpeg = next(p for p in PERTURBATIONS if p.name == "jpeg")
    brightness = next(p for p in PERTURBATIONS if p.name == "brightness")
    pixels = F.to_dtype(images, torch.uint8, scale=True)  # torchvision's conversion

    expected = torch.stack([decode_jpeg(encode_jpeg(image, quality=30)) for image in pixels])
    out = jpeg.apply(images, 30, torch.arange(2), 0)
    assert torch.equal(F.to_dtype(out, torch.uint8, scale=True), expected)
    torch.testing.assert_close(brightness.apply(images, 0.5, torch.arange(2), 0), images * 0.5)


def test_severity_lists_are_checked() -> None:
    from auditor.config import SETTINGS
    from auditor.errors import ConfigError

    with pytest.raises(ConfigError, match="whole numbers"):
        SETTINGS["jpeg_quality"].validate((50.5,))
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        SETTINGS["noise_sigma"].validate((0.1, 2.0))
    with pytest.raises(ConfigError, match="repeated"):
        SETTINGS["rotation_degrees"].validate((5.0, 5.0))
    with pytest.raises(ConfigError, match=r"mild to severe \(each smaller than the last\)"):
        SETTINGS["brightness_factor"].validate((0.4, 0.6, 0.8))
    with pytest.raises(ConfigError, match=r"mild to severe \(each larger than the last\)"):
        SETTINGS["noise_sigma"].validate((0.1, 0.05))
    assert dataclasses.fields(RobustnessSettings)


def test_a_wide_blur_on_a_small_image_is_capped_at_the_image() -> None:
    blur = next(p for p in PERTURBATIONS if p.name == "gaussian-blur")
    images = torch.rand(2, 1, 12, 12)

    out = blur.apply(images, 10.0, torch.arange(2), 0)

    assert out.shape == images.shape and float(out.std()) < float(images.std())


def test_a_non_finite_output_under_a_perturbation_is_a_changed_call(tmp_path: Path) -> None:
    manifest = _pixels(tmp_path)
    robustness = _suite(NanUnderNoise(), manifest, ("low", "high"))

    noise = [r for r in robustness.rows if r.perturbation == "gaussian-noise"]
    for row in noise:
        assert row.accuracy_change.value == -1.0 and row.flips.value == 1.0
        assert row.sensitivity_change.value == -1.0  # type: ignore[union-attr]
        assert row.specificity_change.value == -1.0  # type: ignore[union-attr]


def test_the_shared_audit_s_changes_equal_a_recomputation_from_its_files(
    audit: tuple[object, Path],
) -> None:
    folder = audit[1]
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    perturbed = pd.read_csv(folder / "robustness_predictions.csv", keep_default_na=False)
    table = pd.read_csv(folder / "robustness.csv", keep_default_na=False)

    clean = predictions.set_index("index")
    assert len(table) == len(variants(RobustnessSettings()))
    for row in table.itertuples():
        rows = perturbed[
            (perturbed["perturbation"] == row.perturbation)
            & (perturbed["severity"] == row.severity)
        ].set_index("index")
        assert len(rows) == row.n == len(predictions)
        truth = clean.loc[rows.index, "label"]
        was = clean.loc[rows.index, "prediction"]
        accuracy = float((rows["prediction"] == truth).mean())
        assert row.accuracy == pytest.approx(accuracy)
        assert row.accuracy_change == pytest.approx(accuracy - float((was == truth).mean()))
        assert row.flips == pytest.approx(float((rows["prediction"] != was).mean()))
        assert row.accuracy_change_ci_low <= row.accuracy_change <= row.accuracy_change_ci_high
