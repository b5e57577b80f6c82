"""The GPU path: the same results on CUDA as on the CPU.

These tests run with ``pytest --device cuda`` (or ``cuda:N``) on a machine with a GPU
and are skipped otherwise; asking for CUDA where there is none is an error, not a skip.
Float32 on CUDA is IEEE float32 (:func:`auditor.load.pin_float32` turns cuDNN's TF32
off), and the methods that draw random numbers draw them on the CPU (SmoothGrad's
noise, LIME's and KernelSHAP's coalitions through Captum), so every method's maps must
match the CPU's to float32 rounding: max |CUDA - CPU| ≤ 1e-3 × max |CPU|, the
difference left by another order of summation in the kernels (1e-2 for the methods in
:data:`GATED`), with a correlation of at least 0.999. Mixed precision is
checked against float32 on the GPU, and a whole audit on CUDA must make the CPU's
calls, verdicts and run folder.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from click.testing import Result
from PIL import Image

from auditor.data import discover
from auditor.evaluate import EvaluationSettings, evaluate
from auditor.explain import METHODS, ExplainSettings
from auditor.explain.engine import attribute_batch, build_context
from auditor.images import Preprocessing, model_preprocessing
from auditor.load import OutputKind, load_model, resolve_device
from auditor.precision import PrecisionCheck, check_precision
from auditor.synthetic import generate
from tests.helpers import calibrated, invoke

SIZE = 64
GATED = {"integrated-gradients"}
"""Methods that add up gradients at many points along a path: at one of them, a ReLU whose
input is within rounding of zero can open on one device and stay shut on the other, and
that point's gradient then differs. Measured on an H200: IntegratedGradients' largest
difference was 3.8e-3 of the map's maximum, the others' under 1e-3."""
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def gpu(request: pytest.FixtureRequest) -> torch.device:
    name = request.config.getoption("--device")
    if not name.startswith("cuda"):
        pytest.skip("the GPU tests run with `pytest --device cuda` on a machine with a GPU")
    return resolve_device(name)  # ConfigError where CUDA is missing


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scripted resnet18 (random weights, calibrated) with two outputs, saved."""
    torch.manual_seed(0)
    model = calibrated(torchvision.models.resnet18(num_classes=2), torch.randn(16, 3, SIZE, SIZE))
    path = tmp_path_factory.mktemp("gpu") / "resnet18.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))
    return path


@pytest.fixture(scope="module")
def maps(gpu: torch.device, resnet: Path) -> dict[str, dict[str, np.ndarray | str]]:
    """Every method's maps of the same two images, on the CPU and on the GPU."""
    preprocessing = Preprocessing(3, SIZE, *IMAGENET)
    pictures = generate("val", 2, seed=3)
    display = torch.stack([preprocessing.display(Image.fromarray(p.image)) for p in pictures])
    settings = ExplainSettings()
    found = {}
    for name, device in (("cpu", torch.device("cpu")), ("cuda", gpu)):
        model = load_model(resnet, device)
        context, methods, skipped = build_context(
            model, OutputKind.LOGITS, "layer4", settings, preprocessing
        )
        assert not skipped, skipped
        context.forward_batch = context.backward_batch = 8
        found[name] = attribute_batch(
            context, methods, display, torch.tensor([0, 1]), seeds=[11, 12]
        )
    return found


@pytest.mark.parametrize("key", sorted(METHODS))
def test_each_method_on_the_gpu_makes_the_cpus_maps(
    maps: dict[str, dict[str, np.ndarray | str]], key: str
) -> None:
    cpu, cuda = maps["cpu"][key], maps["cuda"][key]
    assert isinstance(cpu, np.ndarray), cpu
    assert isinstance(cuda, np.ndarray), cuda
    scale = float(np.abs(cpu).max())
    assert scale > 0
    gap = float(np.abs(cuda - cpu).max()) / scale
    correlation = float(np.corrcoef(cpu.ravel(), cuda.ravel())[0, 1])
    print(f"{key}: max |CUDA - CPU| = {gap:.2g} x max |CPU|, correlation {correlation:.7f}")
    assert gap <= (1e-2 if key in GATED else 1e-3)
    assert correlation >= 0.999


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from auditor.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("val"), "val", 96, seed=0)


def _evaluation(
    model_path: Path, data: Path, device: torch.device, precision: str
) -> tuple[pd.DataFrame, PrecisionCheck | None]:
    """The predictions of an evaluation at ``precision``, and its check against float32
    on every image."""
    model = load_model(model_path, device)
    dataset = discover(data, None)
    preprocessing = model_preprocessing(dataset, 3, SIZE, *IMAGENET)
    settings = EvaluationSettings(batch_size=16, precision=precision, precision_check=96)
    evaluation = evaluate(model, dataset, preprocessing, OutputKind.LOGITS, settings)
    check = check_precision(
        model, dataset, preprocessing, OutputKind.LOGITS, settings, evaluation.predictions
    )
    return evaluation.predictions, check


def test_the_evaluation_on_the_gpu_makes_the_cpus_calls(
    gpu: torch.device, resnet: Path, synthetic: Path
) -> None:
    cpu, _ = _evaluation(resnet, synthetic, torch.device("cpu"), "fp32")
    cuda, _ = _evaluation(resnet, synthetic, gpu, "fp32")
    assert (cpu["prediction"] == cuda["prediction"]).all()
    columns = [c for c in cpu.columns if c.startswith("p_")]
    assert np.abs(cpu[columns].to_numpy() - cuda[columns].to_numpy()).max() <= 1e-4


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_the_gpu_is_checked_against_float32(
    gpu: torch.device, resnet: Path, synthetic: Path, precision: str
) -> None:
    """The check's count of agreeing calls equals a direct comparison with float32."""
    reduced, check = _evaluation(resnet, synthetic, gpu, precision)
    full, _ = _evaluation(resnet, synthetic, gpu, "fp32")
    assert check is not None and check.images == len(full) == 96
    assert check.agree == int((reduced["prediction"] == full["prediction"]).sum())
    columns = [c for c in full.columns if c.startswith("p_")]
    change = np.abs(reduced[columns].to_numpy() - full[columns].to_numpy()).max()
    assert check.max_change == pytest.approx(change, abs=1e-6)


@pytest.fixture(scope="module")
def audits(
    gpu: torch.device, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, manifest: Path
) -> Iterator[dict[str, Path]]:
    """The same audit on the CPU and on the GPU (HTML and Markdown: no Pango needed)."""
    folders = {}
    for name, device in (("cpu", "cpu"), ("cuda", str(gpu))):
        out = tmp_path_factory.mktemp(f"audit-{name}")
        result: Result = invoke(
            "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(out),
            "--explain-samples", "3", "--batch-size", "4", "--seed", "1", "--device", device,
            "--format", "html,md", "--history", "-",
        )  # fmt: skip
        assert result.exit_code == 0, result.output + (result.stderr or "")
        folders[name] = Path(result.stdout.strip().splitlines()[-1])
    yield folders


def test_an_audit_on_the_gpu_makes_the_cpus_calls_and_verdicts(audits: dict[str, Path]) -> None:
    cpu, cuda = (pd.read_csv(audits[d] / "predictions.csv") for d in ("cpu", "cuda"))
    assert (cpu["prediction"] == cuda["prediction"]).all()
    assert sorted(p.name for p in audits["cpu"].iterdir()) == sorted(
        p.name for p in audits["cuda"].iterdir()
    )
    verdicts = [pd.read_csv(audits[d] / "trust.csv")[["method", "verdict"]] for d in audits]
    pd.testing.assert_frame_equal(*verdicts)
    metrics = [json.loads((audits[d] / "metrics.json").read_text()) for d in ("cpu", "cuda")]
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"]
    assert "cuda" in (audits["cuda"] / "report.html").read_text(encoding="utf-8")
