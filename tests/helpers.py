"""Tiny real models and generated images shared by the tests (no downloads)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner, Result
from jsonschema import Draft202012Validator, FormatChecker
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from auditor.cli import cli
from auditor.documents import schema
from auditor.explain import METHODS, ExplainContext, ExplainSettings, GradientMethod, GradientPasses
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind
from auditor.pt2 import load_program
from auditor.taps import Model, tap_model

XSS_CLASS = "<script>alert(1)</script>"
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class TinyNet(nn.Module):
    """conv-bn-relu-pool-conv-relu → global average pool → linear."""

    def __init__(self, in_channels: int = 3, outputs: int = 2, softmax: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, outputs)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.pool(self.features(x)).flatten(1))
        return torch.softmax(logits, dim=1) if self.softmax else logits


def _in_channels(model: nn.Module) -> int:
    return next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)


def save_exported(model: nn.Module, path: Path, size: int = 32) -> Path:
    """Save ``model`` (in eval mode) as a ``torch.export`` program with a dynamic batch."""
    example = torch.rand(2, _in_channels(model), size, size)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def save_torchscript(module: nn.Module, path: Path, kind: str = "script", size: int = 32) -> Path:
    """Save ``module`` (in eval mode) as TorchScript, scripted or traced, or (``kind``
    ``"export"``) as a ``torch.export`` program."""
    if kind == "export":
        return save_exported(module, path, size)
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "script":
            compiled = torch.jit.script(module)
        else:
            channels = next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels
            compiled = torch.jit.trace(module, torch.rand(1, channels, size, size))
        compiled.save(str(path))
    return path


def torchscript_twin(model: nn.Module, kind: str, size: int) -> Model:
    """``model`` (in eval mode) scripted, traced or (``kind`` ``"export"``) exported on a
    ``size``-pixel input, then saved and loaded as a user's file would be; the eager
    ``model`` is its twin (same weights)."""
    if kind == "export":
        with tempfile.TemporaryDirectory() as folder:
            path = save_exported(model, Path(folder) / "model.pt2", size)
            return load_program(path, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "script":
            module = torch.jit.script(model.eval())
        else:
            convolutions = (m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d))
            example = torch.rand(1, next(convolutions, 3), size, size)
            module = torch.jit.trace(model.eval(), example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer)


def loaded_model(module: Model, channels: int = 3) -> LoadedModel:
    """A :class:`LoadedModel` on the CPU for an in-memory TorchScript or exported module."""
    return LoadedModel(module, tap_model(module), None, "", 0, torch.device("cpu"), channels)  # type: ignore[arg-type]


def explain_context(
    model: LoadedModel, kind: OutputKind, layer: str | None, guided: bool = False
) -> ExplainContext:
    """The methods' view of ``model`` with every method's settings at their defaults."""
    preprocessing = Preprocessing(model.in_channels, None, None, None)
    settings = ExplainSettings(methods=tuple(METHODS))
    return ExplainContext(model, kind, layer, settings, preprocessing, guided=guided, head=True)


def gradient_passes(
    model: LoadedModel, x: torch.Tensor, targets: torch.Tensor, kind: OutputKind, layer: str
) -> GradientPasses:
    """The shared forward and plain backward pass for ``x`` and ``targets``."""
    return explain_context(model, kind, layer).passes(x, targets)


def method_map(key: str, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
    """``(B, H, W)`` map of gradient method ``key`` from ``passes``, post-processed."""
    method = METHODS[key](context.settings)
    assert isinstance(method, GradientMethod)
    size = (int(passes.inputs.shape[-2]), int(passes.inputs.shape[-1]))
    return method.postprocess(method.from_passes(passes, context), size)


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> float:
    """Equal within ``rtol`` × the reference's largest magnitude; returns the relative gap.

    Relative to the largest value because maps of random-weight models range from 1e-8
    to 1e2 depending on the model and method.
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item()
    assert scale > 0, "the reference is all zero: the comparison would prove nothing"
    gap = (actual.double() - expected.double()).abs().max().item() / scale
    assert gap <= rtol, f"max |difference| is {gap:.3g} × max |reference| (allowed {rtol:g})"
    return gap


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """``(n, 3, size, size)`` smooth random images in [0, 1]: 4×4 random colours upsampled,
    plus a little noise (SLIC finds about as many superpixels in them as asked; in uniform
    noise it can find one)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    smooth = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (smooth + 0.05 * torch.rand(n, 3, size, size, generator=generator)).clamp(0, 1)


def calibrated(model: ModuleT, inputs: torch.Tensor, spread: float = 2.0) -> ModuleT:
    """``model`` in eval mode with trained-like statistics, measured on ``inputs``.

    Batch-norm running statistics become the mean and variance over ``inputs`` (with
    torchvision's initial ones, mean 0 and variance 1, the logits of mobilenet_v3_small
    and efficientnet_b0 vary by 1e-10 between images), and the last linear or convolution
    layer is scaled so that the logits' standard deviation over ``inputs`` is ``spread``
    (with torchvision's classifier initialisation mobilenet's are about 0.05, which makes
    Score-CAM's softmax weights uniform).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration pass
    model.train()
    with torch.no_grad():
        model(inputs)
        model.eval()
        last = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
        scale = spread / model(inputs).std().item()
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.mul_(scale)
    return model


def ig_baseline_images(display: torch.Tensor, kind: str) -> torch.Tensor:
    """Integrated gradients' baselines as documented, in [0, 1]: ``black``; ``blur``, the
    image blurred with σ = 1/20 of its side; ``mean``, the mean colour of the images."""
    if kind == "black":
        return torch.zeros_like(display)
    if kind == "blur":
        sigma = max(display.shape[-2:]) / 20
        kernel = 2 * int(2 * sigma) + 1
        return gaussian_blur(display, [kernel, kernel], [sigma, sigma])
    return display.mean(dim=(0, 2, 3), keepdim=True).expand_as(display)


def write_png(path: Path, seed: int, size: int = 32, mode: str = "RGB") -> Path:
    """A deterministic random PNG."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV manifest with the rows' keys as columns."""
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_manifest_dataset(
    folder: Path, per_class: int = 6, classes: tuple[str, ...] = ("benign", XSS_CLASS)
) -> Path:
    """Images, masks and metadata for ``classes``, plus one corrupt PNG; returns the manifest.

    Metadata: ``site`` (A/B alternating) and ``patient`` (two images each).
    """
    rows = []
    for k, name in enumerate(classes):
        for i in range(per_class):
            image = write_png(folder / "images" / f"c{k}_{i}.png", seed=100 * k + i)
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 8:24] = 255
            mask_path = folder / "masks" / f"c{k}_{i}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_path)
            rows.append(
                {
                    "path": image.relative_to(folder).as_posix(),
                    "label": name,
                    "mask": mask_path.relative_to(folder).as_posix(),
                    "site": "A" if i % 2 else "B",
                    "patient": f"p{k}-{i // 2}",
                }
            )
    corrupt = folder / "images" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    rows.append(
        {"path": "images/corrupt.png", "label": classes[0], "mask": "", "site": "A", "patient": ""}
    )
    return write_manifest(folder, rows)


def invoke(*args: str) -> Result:
    """Run the ``auditor`` CLI in-process."""
    return CliRunner().invoke(cli, list(args))


def is_event(line: str) -> bool:
    """Whether a line of stderr is a stage event (see auditor.events)."""
    return line.startswith("auditor: ")


def one_line_error(result: Result, *fragments: str) -> None:
    """The run failed with exit 1 and one ``Error: …`` line containing ``fragments`` (besides
    the stage events, logged on stderr when it is not a terminal)."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not is_event(line)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module (its neighbours importable, as when run)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def varied_tiny_net(seed: int = 0) -> TinyNet:
    """TinyNet with no constant parameter tensor (batch norm starts at ones and zeros), so
    that every parameter has a spread to redraw from."""
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return net


def check_run_folder(folder: Path) -> None:
    """A run folder's JSON documents follow their shipped schemas, and the manifest's and
    SHA256SUMS's hashes are those of the files."""
    for name in ("metrics", "manifest", "comparison"):
        if name == "comparison" and not (folder / "comparison.json").is_file():
            continue
        document = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        validator = Draft202012Validator(schema(name), format_checker=FormatChecker())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, f"{folder / name}.json breaks its schema: {errors[:3]}"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    on_disk = {p.name for p in folder.iterdir() if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json", "report.pdf", "SHA256SUMS"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, name
    sums = [line.split("  ") for line in (folder / "SHA256SUMS").read_text().splitlines()]
    assert {name for _, name in sums} == on_disk - {"SHA256SUMS"}
    for sha, name in sums:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, name


def probability(called: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A probability of the positive class that is at least one half exactly when ``called``."""
    margin = rng.uniform(0.01, 0.49, called.shape)
    return np.where(called, 0.5 + margin, 0.5 - margin)


Estimate = tuple[float, float, float]


def fake_run_folder(
    parent: Path,
    name: str,
    model: str = "tiny",
    started: str = "2024-05-01T09:30:00+00:00",
    accuracy: Estimate | None = (0.86, 0.825, 0.895),
    auc: Estimate | None = (0.91, 0.88, 0.94),
    failed: int = 0,
    declared: int = 5,
    n_images: int = 200,
    version: str = "",
    settings: dict[str, object] | None = None,
    model_sha256: str = "0" * 64,
    data_sha256: str = "1" * 64,
) -> Path:
    """A run folder ``parent/name`` with the manifest.json, metrics.json and policy.json that
    :meth:`auditor.history.History.record` reads (no report, no images): ``model`` is the
    model-name setting, ``settings`` more settings ({name: value}), ``accuracy`` and ``auc``
    (value, ci_low, ci_high) or absent (None); the policy passed when ``failed`` is 0."""
    folder = parent / name
    folder.mkdir(parents=True)
    values = {"model_name": model, "model_version": version, "seed": 1, **(settings or {})}
    manifest = {
        "schema_version": 1,
        "auditor_version": "0.1.0",
        "model": {"path": f"/models/{model}.pt", "sha256": model_sha256},
        "data": {"source": "/data/manifest.csv", "sha256": data_sha256},
        # the folder in the command makes each fake run's manifest, and its hash, unique
        "command": f"auditor run --model /models/{model}.pt  # {folder}",
        "config": {key: {"value": value, "source": "cli"} for key, value in values.items()},
        "started": started,
        "finished": started,
        "files": {},
    }
    estimate = ("value", "ci_low", "ci_high")
    metrics: dict[str, object] = {"n_images": n_images, "n_excluded": 0, "operating_point": None}
    if accuracy is not None:
        metrics["accuracy"] = dict(zip(estimate, accuracy, strict=True))
    if auc is not None:
        metrics["operating_point"] = {"auc": dict(zip(estimate, auc, strict=True))}
    policy = {"passed": failed == 0, "declared": declared, "failed": failed, "criteria": []}
    for stem, document in (("manifest", manifest), ("metrics", metrics), ("policy", policy)):
        (folder / f"{stem}.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return folder


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@contextmanager
def headless_chromium(width: int, height: int) -> Iterator[webdriver.Chrome]:
    """Debian's headless Chromium at ``width`` x ``height``, with the console log kept. Fails
    (never skips) when chromium or chromedriver is missing: the browser tests are part of
    the suite."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the browser test needs Debian's chromium and "
            "chromium-driver. Run `make system-deps` as root to install them.",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver's path, Selenium Manager stays idle
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


WHEN_AND_WHERE = {"manifest.json", "SHA256SUMS", "report.html", "report.pdf", "summary.md"}
"""Run-folder files that record the run's times, its folder or its command line."""


def _compare_runs(
    first: Path,
    second: Path,
    arrays: Callable[[np.ndarray, np.ndarray, str], None],
    files: Callable[[str, Path, Path], None],
) -> None:
    """Two run folders hold the same files; every ``.npz`` member and ``.npy`` array is
    compared with ``arrays``, every other file but the :data:`WHEN_AND_WHERE` ones with
    ``files``."""
    names = {p.name for p in first.iterdir()}
    assert names == {p.name for p in second.iterdir()}
    for name in sorted(names - WHEN_AND_WHERE):
        a, b = first / name, second / name
        if name.endswith(".npz"):
            with np.load(a) as left, np.load(b) as right:
                assert sorted(left.files) == sorted(right.files), name
                for key in left.files:
                    arrays(left[key], right[key], f"{name}:{key}")
        elif name.endswith(".npy"):
            arrays(np.load(a), np.load(b), name)
        else:
            files(name, a, b)


def _same_bytes(name: str, a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), name


def assert_same_results(first: Path, second: Path) -> None:
    """Two run folders hold the same files, and the same bytes in every CSV, JSON and array
    file (arrays compared member by member) but the :data:`WHEN_AND_WHERE` files, whose
    recorded hashes of the others must match too."""

    def equal(a: np.ndarray, b: np.ndarray, what: str) -> None:
        np.testing.assert_array_equal(a, b, err_msg=what)

    _compare_runs(first, second, equal, _same_bytes)
    hashes = (json.loads((f / "manifest.json").read_text()) for f in (first, second))
    left, right = ({k: v for k, v in m["files"].items() if k not in WHEN_AND_WHERE} for m in hashes)
    assert left == right  # the .npz files too: their members carry no time


def _close_arrays(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Float arrays within 1e-5 of each map's (last two axes') largest value; others equal."""
    if a.dtype.kind != "f" or a.ndim < 2:
        np.testing.assert_array_equal(a, b, err_msg=what)
        return
    scale = np.abs(b).max(axis=(-2, -1), keepdims=True)
    assert a.shape == b.shape, what
    assert (np.abs(a - b) <= 1e-5 * scale + 1e-12).all(), f"{what}: {np.abs(a - b).max()}"


def _close_json(a: object, b: object, where: str) -> None:
    """Two JSON trees the same but for their floats' last digits (relative 1e-5)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close_json(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close_json(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_close_results(first: Path, second: Path, exact: tuple[str, ...]) -> None:
    """Two run folders hold the same files: the ``exact`` ones the same bytes, the maps
    in every ``.npz`` within 1e-5 of their largest value, and every other CSV and JSON
    file the same but for its floats' last digits (relative 1e-5). For runs whose maps
    were computed in other batches or threads (a sharded run's: see the README's
    Determinism section)."""

    def close(name: str, a: Path, b: Path) -> None:
        if name in exact or not name.endswith((".csv", ".json")):
            _same_bytes(name, a, b)
        elif name.endswith(".csv"):
            pd.testing.assert_frame_equal(
                pd.read_csv(a, keep_default_na=False), pd.read_csv(b, keep_default_na=False),
                rtol=1e-5, atol=1e-7, obj=name,
            )  # fmt: skip
        else:
            _close_json(json.loads(a.read_text()), json.loads(b.read_text()), name)

    _compare_runs(first, second, _close_arrays, close)
