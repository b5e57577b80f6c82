"""The explain stage: applicability, shared passes, batching, memory retries, failures."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from auditor.data import discover
from auditor.explain import METHODS, Batch, ExplainContext, ExplainSettings, Method, batching
from auditor.explain.batching import halving_on_oom, measure_batch_size
from auditor.explain.engine import build_context, explain_cases
from auditor.explain.store import save_maps
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind
from auditor.select import Selection
from auditor.taps import TappedModel
from tests.helpers import TinyNet, write_manifest, write_png

SMALL = ExplainSettings(
    methods=tuple(METHODS),
    ig_steps=4,
    smoothgrad_samples=3,
    occlusion_window=8,
    superpixels=8,
    lime_samples=16,
    shap_samples=16,
)


def loaded(module: nn.Module, channels: int = 3) -> LoadedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module.eval())
    return LoadedModel(  # type: ignore[arg-type]
        scripted, TappedModel(scripted), None, "", 0, torch.device("cpu"), channels
    )


class NoReluMlpHead(nn.Module):
    """conv-tanh → pool → two linear layers: no ReLU, no GAP + linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.tanh(self.conv(x))).flatten(1))


def test_methods_that_cannot_run_say_why() -> None:
    _, methods, reasons = build_context(
        loaded(NoReluMlpHead()), OutputKind.LOGITS, "conv", SMALL, Preprocessing(3)
    )
    assert set(reasons) == {"cam", "guided-backprop", "guided-grad-cam"}
    assert "global-average-pooling + linear head" in reasons["cam"]
    assert "no ReLU" in reasons["guided-backprop"]
    assert [m.key for m in methods] == [k for k in METHODS if k not in reasons]
    _, _, without_layer = build_context(
        loaded(TinyNet()), OutputKind.LOGITS, None, SMALL, Preprocessing(3)
    )
    assert {"grad-cam", "grad-cam-plus-plus", "guided-grad-cam", "score-cam"} <= set(without_layer)
    assert "cam" not in without_layer, "CAM reads the head, not the target layer"


def test_cam_is_not_applicable_after_a_softmax() -> None:
    _, _, reasons = build_context(
        loaded(TinyNet(softmax=True)), OutputKind.PROBABILITIES, "features", SMALL, Preprocessing(3)
    )
    assert "the last operation is softmax" in reasons["cam"]


def test_guided_pass_clamps_negative_gradients_at_every_relu() -> None:
    # y = w2 · relu(w1 x): the guided gradient keeps w2's positive part only.
    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1, bias=False)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2, 1, bias=False)
            with torch.no_grad():
                self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
                self.fc.weight.copy_(torch.tensor([[3.0, -1.0]]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))

    model = loaded(Chain(), channels=1)
    context = ExplainContext(model, OutputKind.LOGITS, "conv", SMALL, Preprocessing(1), guided=True)
    x = torch.ones(1, 1, 2, 2)
    passes = context.passes(x, torch.tensor([0]))
    # plain: (3·1 - 1·2) / 4 per pixel; guided: 3·1 / 4 (the -1 path is cut).
    torch.testing.assert_close(passes.input_grads, torch.full((1, 1, 2, 2), 0.25))
    torch.testing.assert_close(passes.guided_input_grads, torch.full((1, 1, 2, 2), 0.75))
    again = context.passes(x, torch.tensor([0]), guided=False)
    assert again.guided_input_grads.numel() == 0
    torch.testing.assert_close(again.input_grads, passes.input_grads), "hooks were removed"


def test_halving_on_oom_retries_with_half_the_batch() -> None:
    tried: list[int] = []

    def run(size: int) -> int:
        tried.append(size)
        if size > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return size * 10

    assert halving_on_oom(run, 16, "test") == (20, 2)
    assert tried == [16, 8, 4, 2]
    with pytest.raises(ValueError, match="not memory"):
        halving_on_oom(lambda size: (_ for _ in ()).throw(ValueError("not memory")), 4, "test")


def test_measure_batch_size_keeps_the_cheapest_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(batching.time, "perf_counter", lambda: clock[0])
    per_image = {8: 3.0, 16: 2.0, 32: 1.5, 64: 1.6, 128: 5.0}

    def step(batch: torch.Tensor) -> None:
        clock[0] += per_image[len(batch)] * len(batch)

    assert measure_batch_size(step, torch.zeros(1, 2, 2)) == 32
    assert measure_batch_size(step, torch.zeros(1, 2, 2), limit=16) == 16

    def runs_out_above_16(batch: torch.Tensor) -> None:
        if len(batch) > 16:
            raise torch.OutOfMemoryError("out of memory")
        step(batch)

    assert measure_batch_size(runs_out_above_16, torch.zeros(1, 2, 2)) == 16


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("explain-data")
    rows = [
        {"path": write_png(folder / f"{i}.png", seed=i, size=16).name, "label": "ab"[i % 2]}
        for i in range(6)
    ]
    return write_manifest(folder, rows)


def _predictions(labels: list[str], predicted: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "index": range(len(labels)),
            "path": [f"{i}.png" for i in range(len(labels))],
            "label": labels,
            "prediction": predicted,
            "correct": [a == b for a, b in zip(labels, predicted, strict=True)],
            "confidence": 0.9,
        }
    )


def _explain(
    small_data: Path, settings: ExplainSettings, batch_size: int = 4
) -> tuple[object, pd.DataFrame]:
    torch.manual_seed(0)
    dataset = discover(small_data, None)
    labels = [dataset.classes[s.label] for s in dataset.samples]
    predicted = ["a", "a", "a", "b", "b", "b"]
    predictions = _predictions(labels, predicted)
    errors = tuple(int(i) for i in predictions.index[~predictions["correct"]])
    selection = Selection(sampled=(0, 3), misclassified=errors, n_errors=len(errors))
    result = explain_cases(
        loaded(TinyNet()),
        dataset,
        Preprocessing(3, None, None, None, size=(16, 16)),
        predictions,
        selection,
        OutputKind.LOGITS,
        "features",
        settings,
        batch_size,
    )
    return result, predictions


def test_every_method_maps_every_case_and_the_npz_keeps_them(
    small_data: Path, tmp_path: Path
) -> None:
    result, predictions = _explain(small_data, SMALL)
    records = result.records  # type: ignore[attr-defined]
    n_errors = int((~predictions["correct"]).sum())
    n_cases = 2 * n_errors + 2
    assert len(records) == n_cases * len(METHODS)
    assert set(records["status"]) == {"ok"}
    assert [d.key for d in result.methods] == list(METHODS)  # type: ignore[attr-defined]
    truths = records[records["role"] == "true"]
    assert len(truths) == n_errors * len(METHODS), "errors are explained for the true class too"
    save_maps(result, tmp_path / "maps.npz")  # type: ignore[arg-type]
    saved = np.load(tmp_path / "maps.npz")
    assert saved["maps"].shape == (len(records), 16, 16)
    assert set(saved["method"]) == set(METHODS)
    first = records.iloc[0]
    key = (int(first["index"]), str(first["role"]), str(first["method"]))
    np.testing.assert_array_equal(saved["maps"][0], result.maps[key])  # type: ignore[attr-defined]


def test_results_do_not_depend_on_the_batch_size(small_data: Path) -> None:
    together, _ = _explain(small_data, SMALL, batch_size=8)
    alone, _ = _explain(small_data, SMALL, batch_size=1)
    for key, value in together.maps.items():  # type: ignore[attr-defined]
        np.testing.assert_allclose(value, alone.maps[key], rtol=1e-4, atol=1e-5, err_msg=str(key))


class _Flaky(Method):
    """Out of memory above two cases per batch; fails when a batch starts with class ``b``."""

    key = "flaky"
    title = "Flaky"
    paper = "nobody, 2026"
    postprocessing = ()
    reading = caveat = implementation = "test only"

    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        if len(batch.inputs) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        if int(batch.targets[0]) == 1:
            raise ValueError("cannot explain class b")
        return batch.inputs.mean(dim=1)


def test_out_of_memory_halves_the_batch_and_failures_become_rows(
    small_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "flaky", _Flaky)
    settings = ExplainSettings(methods=("saliency", "flaky"))
    result, _ = _explain(small_data, settings, batch_size=8)
    assert result.batch_sizes["explain"] == 2  # type: ignore[attr-defined]
    records = result.records  # type: ignore[attr-defined]
    saliency = records[records["method"] == "saliency"]
    assert set(saliency["status"]) == {"ok"}
    flaky = records[records["method"] == "flaky"]
    failed = flaky[flaky["status"] == "failed"]
    assert len(failed) > 0 and set(failed["detail"]) == {"cannot explain class b"}
    assert (flaky["status"] == "ok").sum() > 0, "the other batches still ran"


def test_activation_only_methods_run_without_a_backward_pass() -> None:
    model = loaded(TinyNet())
    settings = ExplainSettings(methods=("cam", "score-cam"))
    context, _, _ = build_context(model, OutputKind.LOGITS, "features", settings, Preprocessing(3))
    assert not context.gradients
    passes = context.passes(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))
    assert passes.input_grads.numel() == 0 and passes.activation_grads.numel() == 0
    assert passes.activations.shape == (2, 8, 8, 8) and passes.head_features.shape == (2, 8, 8, 8)
    assert not passes.activations.requires_grad
    with_grad, _, _ = build_context(
        model, OutputKind.LOGITS, "features", ExplainSettings(methods=("cam", "grad-cam")),
        Preprocessing(3),
    )  # fmt: skip
    assert with_grad.gradients


class _Huge(Method):
    """Never fits in memory."""

    key = "huge"
    title = "Huge"
    paper = "nobody, 2026"
    postprocessing = ()
    reading = caveat = implementation = "test only"

    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")


def test_a_case_that_never_fits_becomes_failed_rows(
    small_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "huge", _Huge)
    result, _ = _explain(small_data, ExplainSettings(methods=("saliency", "huge")), batch_size=4)
    records = result.records  # type: ignore[attr-defined]
    assert set(records["status"]) == {"failed"}
    assert records["detail"].str.contains("out of memory").all()
    assert result.batch_sizes["explain"] == 1  # type: ignore[attr-defined]
