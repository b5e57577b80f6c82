"""The explain stage: applicability, shared passes, batching, memory retries, failures."""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from auditor.data import discover
from auditor.explain import METHODS, Batch, ExplainContext, ExplainSettings, Method, batching
from auditor.explain.batching import batches_halving_on_oom, halving_on_oom, measure_batch_size
from auditor.explain.engine import Explanations, build_context, explain_cases
from auditor.explain.store import save_maps
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind
from auditor.measure.maps import recompute
from auditor.select import Selection
from auditor.taps import TappedModel
from tests.helpers import TinyNet, loaded_model, torchscript_twin, write_manifest, write_png

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


def live_hooks(tensors: Iterable[torch.Tensor]) -> int:
    """Tensor hooks still registered on ``tensors`` (``Tensor.register_hook`` adds one to
    ``_backward_hooks``; removing its handle takes it out)."""
    return sum(len(t._backward_hooks or {}) for t in tensors)


@pytest.fixture
def tapped_tensors(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every tensor a :class:`TappedModel` returns from now on (the guided pass hooks them)."""
    seen: list[torch.Tensor] = []
    original = TappedModel.__call__

    def recording(
        self: TappedModel, inputs: torch.Tensor, paths: Any = (), addresses: Any = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        output, taps = original(self, inputs, paths, addresses)
        seen.extend(taps)
        return output, taps

    monkeypatch.setattr(TappedModel, "__call__", recording)
    return seen


class Chain(nn.Module):
    """y = w2 · relu(w1 x) with w1 = (1, 2) and w2 = (3, -1)."""

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


def test_guided_pass_clamps_negative_gradients_at_every_relu(
    tapped_tensors: list[torch.Tensor],
) -> None:
    # y = w2 · relu(w1 x): the guided gradient keeps w2's positive part only.
    model = loaded(Chain(), channels=1)
    context = ExplainContext(model, OutputKind.LOGITS, "conv", SMALL, Preprocessing(1), guided=True)
    x = torch.ones(1, 1, 2, 2)
    passes = context.passes(x, torch.tensor([0]))
    # plain: (3·1 - 1·2) / 4 per pixel; guided: 3·1 / 4 (the -1 path is cut).
    torch.testing.assert_close(passes.input_grads, torch.full((1, 1, 2, 2), 0.25))
    torch.testing.assert_close(passes.guided_input_grads, torch.full((1, 1, 2, 2), 0.75))
    relus = tapped_tensors[1:]  # after the layer's tap
    assert len(relus) == 1 and relus[0].grad_fn is not None, "the ReLU's output was tapped"
    assert live_hooks(tapped_tensors) == 0, "the clamping hook was removed after the pass"
    again = context.passes(x, torch.tensor([0]), guided=False)
    assert again.guided_input_grads.numel() == 0
    torch.testing.assert_close(
        again.input_grads, passes.input_grads, msg="a plain pass after a guided one is plain"
    )


def test_the_clamping_hooks_are_removed_when_the_guided_backward_fails(
    tapped_tensors: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = loaded(Chain(), channels=1)
    context = ExplainContext(model, OutputKind.LOGITS, "conv", SMALL, Preprocessing(1), guided=True)
    grad = torch.autograd.grad
    hooked: list[int] = []

    def failing_while_hooked(*args: Any, **kwargs: Any) -> Any:
        if live_hooks(tapped_tensors):
            hooked.append(live_hooks(tapped_tensors))
            raise RuntimeError("backward failed")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", failing_while_hooked)
    with pytest.raises(RuntimeError, match="backward failed"):
        context.passes(torch.ones(1, 1, 2, 2), torch.tensor([0]))
    assert hooked == [1], "the guided backward ran with the ReLU's hook in place"
    assert live_hooks(tapped_tensors) == 0


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


def test_the_batch_walker_halves_keeps_the_smaller_size_and_reports_what_never_fits() -> None:
    calls: list[tuple[int, int]] = []

    def run(start: int, stop: int) -> list[int]:
        calls.append((start, stop))
        if stop - start > 2 or start <= 5 < stop:  # at most 2 at a time; item 5 never fits
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return list(range(start, stop))

    spans = list(batches_halving_on_oom(run, 9, 8, "test"))
    assert [(s.start, s.stop, s.tried, s.size) for s in spans] == [
        (0, 2, 8, 2),
        (2, 4, 2, 2),
        (4, 5, 2, 1),  # items 4 and 5 do not fit together: halved to 1
        (5, 6, 1, 1),  # item 5 never fits
        (6, 7, 1, 1),
        (7, 8, 1, 1),
        (8, 9, 1, 1),
    ]
    assert [s.result for s in spans] == [[0, 1], [2, 3], [4], None, [6], [7], [8]]
    assert spans[3].error == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert [s.halved for s in spans] == [True, False, True, False, False, False, False]
    assert calls[:3] == [(0, 8), (0, 4), (0, 2)]

    def broken(start: int, stop: int) -> None:
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        next(batches_halving_on_oom(broken, 3, 2, "test"))


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
    small_data: Path,
    settings: ExplainSettings,
    batch_size: int = 4,
    model: Callable[[], LoadedModel] = lambda: loaded(TinyNet()),
) -> tuple[Explanations, pd.DataFrame]:
    """Explain images 1 and 4 (misclassified) and 0 and 3 (sampled) of ``small_data``."""
    torch.manual_seed(0)
    dataset = discover(small_data, None)
    labels = [dataset.classes[s.label] for s in dataset.samples]
    predicted = ["a", "a", "a", "b", "b", "b"]
    predictions = _predictions(labels, predicted)
    errors = tuple(int(i) for i in predictions.index[~predictions["correct"]])
    selection = Selection(sampled=(0, 3), misclassified=errors, n_errors=len(errors))
    result = explain_cases(
        model(),
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
    records = result.records
    n_errors = int((~predictions["correct"]).sum())
    n_cases = 2 * n_errors + 2
    assert len(records) == n_cases * len(METHODS)
    assert set(records["status"]) == {"ok"}
    assert [d.key for d in result.methods] == list(METHODS)
    truths = records[records["role"] == "true"]
    assert len(truths) == n_errors * len(METHODS), "errors are explained for the true class too"
    assert len(result.cases) == n_cases and len(result.maps) == len(records)
    save_maps(result, tmp_path / "maps.npz")
    saved = np.load(tmp_path / "maps.npz")
    assert saved["maps"].shape == (len(records), 16, 16)
    assert set(saved["method"]) == set(METHODS)
    first = records.iloc[0]
    case = result.case(int(first["index"]), str(first["role"]))
    assert case is not None and result.classes[case.target] == first["target"]
    np.testing.assert_array_equal(saved["maps"][0], result.maps.get(case, str(first["method"])))


def test_results_do_not_depend_on_the_batch_size(small_data: Path) -> None:
    together, _ = _explain(small_data, SMALL, batch_size=8)
    alone, _ = _explain(small_data, SMALL, batch_size=1)
    assert together.cases == alone.cases
    for case in together.cases:
        for key in together.ran:
            value, other = together.maps.get(case, key), alone.maps.get(case, key)
            assert value is not None and other is not None
            np.testing.assert_allclose(value, other, rtol=1e-4, atol=1e-5, err_msg=str((case, key)))


def test_the_explanations_carry_the_state_their_methods_ran_in(small_data: Path) -> None:
    settings = ExplainSettings(
        methods=("integrated-gradients", "occlusion", "guided-backprop"),
        ig_baseline="mean",
        ig_steps=4,
        occlusion_window=8,
    )
    torch.manual_seed(0)
    model = loaded(TinyNet())
    result, _ = _explain(small_data, settings, batch_size=8, model=lambda: model)
    assert result.settings == settings
    assert [(c.index, c.group, c.role) for c in result.cases] == [
        (1, "misclassified", "predicted"),
        (1, "misclassified", "true"),
        (4, "misclassified", "predicted"),
        (4, "misclassified", "true"),
        (0, "sampled", "predicted"),
        (3, "sampled", "predicted"),
    ]
    assert [result.classes[c.target] for c in result.cases] == ["a", "b", "b", "a", "a", "b"]
    images = np.stack(list(result.images.values()))
    assert result.mean_colour == pytest.approx(images.mean(axis=(0, 1, 2)).tolist(), abs=1e-6)
    context, methods = result.context(model, OutputKind.LOGITS, Preprocessing(3))
    assert [m.key for m in methods] == list(result.ran)
    assert context.layer == "features" and context.guided
    assert context.forward_batch == result.batch_sizes["forward"]
    assert context.backward_batch == result.batch_sizes["backward"]
    # The same maps again from the carried state alone (IG's mean-colour baseline included).
    display = torch.stack(
        [torch.from_numpy(result.images[c.index]).permute(2, 0, 1) for c in result.cases]
    )
    targets = torch.tensor([c.target for c in result.cases])
    seeds = [settings.seed + c.index for c in result.cases]
    again = recompute(context, methods, display, targets, seeds, batch_size=8)
    for key, maps in again.items():
        for case, value in zip(result.cases, maps, strict=True):
            assert not isinstance(value, str), value
            np.testing.assert_allclose(value, result.maps.get(case, key), rtol=1e-5, atol=1e-6)


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
    assert result.batch_sizes["explain"] == 2
    # the passes started at the batch size and shrank as the batch did (8 → 2)
    assert result.batch_sizes["forward"] == result.batch_sizes["backward"] == 2
    records = result.records
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
    records = result.records
    assert set(records["status"]) == {"failed"}
    assert records["detail"].str.contains("out of memory").all()
    assert result.batch_sizes["explain"] == 1


class Tripwire:
    """Counts model calls and gradient computations; raises at the ``at``-th when armed.

    Counted: :class:`TappedModel` calls (the shared passes, SmoothGrad), the model's class
    scores (perturbation methods, Captum's forward) and ``torch.autograd.grad`` (every
    backward pass, the guided one after its hooks are registered included).
    """

    def __init__(self, tapped: list[torch.Tensor]) -> None:
        self.tapped = tapped
        self.count = 0
        self.at: int | None = None
        self.hooks_when_tripped = -1

    def tick(self) -> None:
        self.count += 1
        if self.count == self.at:
            self.hooks_when_tripped = live_hooks(self.tapped)
            raise RuntimeError("tripwire: the model failed mid-way")


@pytest.fixture
def tripwire(tapped_tensors: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch) -> Tripwire:
    wire = Tripwire(tapped_tensors)
    tapped_call, class_scores, grad = (
        TappedModel.__call__,
        ExplainContext.class_scores,
        torch.autograd.grad,
    )

    def tapped(self: TappedModel, *args: Any, **kwargs: Any) -> Any:
        wire.tick()
        return tapped_call(self, *args, **kwargs)

    def scores(self: ExplainContext, inputs: torch.Tensor) -> torch.Tensor:
        wire.tick()
        return class_scores(self, inputs)

    def gradient(*args: Any, **kwargs: Any) -> Any:
        wire.tick()
        return grad(*args, **kwargs)

    monkeypatch.setattr(TappedModel, "__call__", tapped)
    monkeypatch.setattr(ExplainContext, "class_scores", scores)
    monkeypatch.setattr(torch.autograd, "grad", gradient)
    return wire


def _archive(mode: str) -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torchscript_twin(TinyNet(), mode, 16), buffer)
    return buffer.getvalue()


def _load(archive: bytes) -> LoadedModel:
    return loaded_model(torch.jit.load(io.BytesIO(archive)))


def _behaviour(model: LoadedModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Output, input gradient, and a guided pass's gradients and activations on ``x``."""
    inputs = x.clone().requires_grad_(True)
    output = model.module(inputs)
    (input_grad,) = torch.autograd.grad(output[:, 0].sum(), inputs)
    context = ExplainContext(
        model, OutputKind.LOGITS, "features", SMALL, Preprocessing(3), guided=True
    )
    passes = context.passes(x, torch.tensor([0, 1]))
    return [
        output.detach(),
        input_grad,
        passes.input_grads,
        passes.guided_input_grads,
        passes.activations,
        passes.activation_grads,
    ]


@pytest.mark.parametrize("mode", ["script", "trace"])
@pytest.mark.parametrize("key", list(METHODS))
def test_an_error_inside_any_method_leaves_no_hook_or_tap_on_the_model(
    key: str, mode: str, small_data: Path, tripwire: Tripwire
) -> None:
    archive = _archive(mode)
    settings = dataclasses.replace(SMALL, methods=(key,))
    dry, _ = _explain(small_data, settings, batch_size=8, model=lambda: _load(archive))
    assert set(dry.records["status"]) == {"ok"}, dry.not_applicable
    assert tripwire.count > 0
    tripwire.at, tripwire.count = tripwire.count, 0  # the last call: mid-way through the batch
    model = _load(archive)
    graph, code = str(model.module.forward.graph), model.module.code
    result, _ = _explain(small_data, settings, batch_size=8, model=lambda: model)
    tripwire.at = None

    records = result.records
    assert len(records) == 6 and set(records["status"]) == {"failed"}, "rows, not a crash"
    assert set(records["detail"]) == {"tripwire: the model failed mid-way"}
    if METHODS[key].needs_guided:
        assert tripwire.hooks_when_tripped > 0, "it failed while the clamping hooks were on"
    assert live_hooks(tripwire.tapped) == 0, "no tensor hook was left behind"
    assert torch.is_grad_enabled()
    assert str(model.module.forward.graph) == graph and model.module.code == code
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    fresh = _load(archive)
    for used, loaded_fresh in zip(_behaviour(model, x), _behaviour(fresh, x), strict=True):
        torch.testing.assert_close(used, loaded_fresh, rtol=0, atol=0)


@pytest.mark.parametrize("how", ["batch-size", "measured"])
def test_the_perturbation_passes_run_at_the_batch_size_unless_measured(
    small_data: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    def timed(context: ExplainContext, methods: list[Method], example: torch.Tensor) -> None:
        context.forward_batch, context.backward_batch = 16, 64

    monkeypatch.setattr(batching, "measure_batches", timed)
    settings = ExplainSettings(methods=("occlusion",), pass_batches=how)
    result, _ = _explain(small_data, settings, batch_size=4)
    expected = (
        {"forward": 16, "backward": 64} if how == "measured" else {"forward": 4, "backward": 4}
    )
    assert {k: result.batch_sizes[k] for k in expected} == expected
