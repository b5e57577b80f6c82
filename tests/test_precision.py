"""Mixed-precision evaluation (setting ``precision``) and its check against float32.

A linear model whose two logits differ by a hair flips calls under bfloat16 autocast:
the check must count exactly the calls that a direct float32 and bfloat16 forward pass
disagree on, and say so in the summary. A float32 run has no check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from auditor.data import discover
from auditor.evaluate import EvaluationSettings, evaluate
from auditor.images import model_preprocessing
from auditor.load import OutputKind, load_model
from auditor.precision import check_precision, precision_sentence
from tests.helpers import check_run_folder, invoke, save_torchscript, write_manifest, write_png

SIZE = 16


class NearTie(nn.Module):
    """Two logits from one linear map, the second a hair above the first on bright images."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * SIZE * SIZE, 2)
        weight = torch.full((3 * SIZE * SIZE,), 1.0 / (3 * SIZE * SIZE))
        with torch.no_grad():
            self.linear.weight.copy_(torch.stack([weight, weight * 1.002]))
            self.linear.bias.copy_(torch.tensor([0.0, -0.001]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.fixture(scope="module")
def near_tie(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("precision")
    rows = [
        {"path": write_png(folder / f"{i}.png", seed=i, size=SIZE).name, "label": "ab"[i % 2]}
        for i in range(40)
    ]
    model = save_torchscript(NearTie(), folder / "near_tie.pt", size=SIZE)
    return model, write_manifest(folder, rows)


def _direct_calls(model_path: Path, inputs: torch.Tensor, dtype: torch.dtype | None) -> np.ndarray:
    module = torch.jit.load(str(model_path))
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        return module(inputs).float().argmax(dim=1).numpy()


def test_the_check_counts_the_calls_bfloat16_changes(near_tie: tuple[Path, Path]) -> None:
    model_path, manifest = near_tie
    model = load_model(model_path, torch.device("cpu"))
    dataset = discover(manifest, None)
    preprocessing = model_preprocessing(dataset, 3, SIZE, (0.0,), (1.0,))
    settings = EvaluationSettings(precision="bf16", precision_check=30)
    evaluation = evaluate(model, dataset, preprocessing, OutputKind.LOGITS, settings)
    check = check_precision(
        model, dataset, preprocessing, OutputKind.LOGITS, settings, evaluation.predictions
    )
    assert check is not None and check.images == 30

    rng = np.random.default_rng(settings.seed)
    chosen = np.sort(rng.choice(evaluation.predictions["index"].to_numpy(), 30, False))
    inputs = torch.stack(
        [
            preprocessing.normalise(preprocessing.display(Image.open(dataset.samples[i].path)))
            for i in chosen
        ]
    )
    full, mixed = (
        _direct_calls(model_path, inputs, None),
        _direct_calls(model_path, inputs, torch.bfloat16),
    )
    assert 0 < (full != mixed).sum() < 30, "the fixture must flip some calls, not all"
    assert check.agree == int((full == mixed).sum())
    labels = np.array([dataset.samples[i].label for i in chosen])
    assert check.accuracy_fp32 == pytest.approx((full == labels).mean())
    assert check.accuracy_mixed == pytest.approx((mixed == labels).mean())
    assert 0 < check.max_change < 0.01
    predicted = evaluation.predictions.set_index("index").loc[chosen, "prediction"]
    assert list(predicted) == ["ab"[k] for k in mixed], "the metrics are the mixed run's"
    sentence = precision_sentence(check)
    changed = 30 - check.agree
    assert sentence.startswith("Evaluated in bfloat16 mixed precision: on 30 images run again")
    assert f"{changed} calls changed" in sentence or f"{changed} call changed" in sentence


def test_float32_has_no_check(near_tie: tuple[Path, Path]) -> None:
    model_path, manifest = near_tie
    model = load_model(model_path, torch.device("cpu"))
    dataset = discover(manifest, None)
    preprocessing = model_preprocessing(dataset, 3, SIZE, None, None)
    settings = EvaluationSettings()
    evaluation = evaluate(model, dataset, preprocessing, OutputKind.LOGITS, settings)
    assert settings.precision == "fp32"
    assert check_precision(
        model, dataset, preprocessing, OutputKind.LOGITS, settings, evaluation.predictions
    ) is None  # fmt: skip
    assert precision_sentence(None) == ""


def test_a_mixed_precision_run_reports_the_check_on_page_one(
    near_tie: tuple[Path, Path], tmp_path: Path
) -> None:
    model_path, manifest = near_tie
    result = invoke(
        "run", "--model", str(model_path), "--data", str(manifest), "--out", str(tmp_path),
        "--precision", "bf16", "--explain-samples", "0", "--robustness-images", "0",
        "--image-size", str(SIZE), "--mean", "0", "--std", "1", "--device", "cpu",
        "--history", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + (result.stderr or "")
    folder = Path(result.stdout.strip().splitlines()[-1])
    check_run_folder(folder)
    precision = json.loads((folder / "metrics.json").read_text())["precision"]
    assert precision["precision"] == "bf16" and precision["images"] == 40
    assert precision["agree"] < 40
    summary = (folder / "summary.md").read_text()
    assert "**Mixed precision.** Evaluated in bfloat16 mixed precision: on 40 images" in summary
