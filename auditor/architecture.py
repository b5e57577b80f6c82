"""Architecture stage: the module table, totals, latency, throughput and peak memory.

Module outputs and the module list come from the tap layer (:mod:`auditor.taps`), so the
table works on a TorchScript file or a ``torch.export`` program with no Python class.
Total FLOPs are counted by PyTorch's :class:`~torch.utils.flop_counter.FlopCounterMode`;
the per-module split is the tap layer's (FlopCounterMode attributes FLOPs to modules
through hooks, which neither format's submodules fire).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from auditor.load import MODEL_ERRORS, LoadedModel, forward_failed
from auditor.taps import Model

__all__ = [
    "ArchitectureProfile",
    "LayerInfo",
    "choose_target_layer",
    "layers_frame",
    "profile_model",
]


@dataclass(frozen=True)
class LayerInfo:
    """One submodule.

    Attributes:
        path: Dotted module path.
        type_name: Class name of the module.
        output_shape: Output shape for one image, without the batch dimension; empty if
            the module's output could not be tapped (never called, or not a tensor).
        parameters: Parameters of the module and its children.
        flops: Multiply-add FLOPs (2 per MAC) of its convolutions and matrix products, per image.
        order: Execution order of its output (0 if not tapped).
    """

    path: str
    type_name: str
    output_shape: tuple[int, ...]
    parameters: int
    flops: int
    order: int


@dataclass(frozen=True)
class ArchitectureProfile:
    """The model's structure and cost on the audit's device.

    Attributes:
        layers: Every submodule, a parent before its children: in definition order for
            TorchScript, in order of first use for a ``torch.export`` program (whose
            graph keeps no module objects).
        input_shape: ``(C, H, W)`` of one input image.
        parameters: Total parameters.
        trainable_parameters: Parameters with ``requires_grad``.
        flops_per_image: FlopCounterMode's total for one image.
        file_size: Model file size in bytes.
        sha256: Model file SHA-256.
        file_format: ``"TorchScript"`` or ``"torch.export"``.
        device: Where latency and memory were measured.
        batch_size: Batch size of the throughput measurement.
        latency_ms: Median wall time of one single-image forward pass, milliseconds.
        throughput: Images per second at ``batch_size``.
        peak_memory_bytes: CUDA peak allocated memory during the measurement, or the
            process's peak resident set size on CPU.
        peak_memory_kind: Which of the two ``peak_memory_bytes`` is.
    """

    layers: tuple[LayerInfo, ...]
    input_shape: tuple[int, int, int]
    parameters: int
    trainable_parameters: int
    flops_per_image: int
    file_size: int
    sha256: str
    file_format: str
    device: str
    batch_size: int
    latency_ms: float
    throughput: float
    peak_memory_bytes: int
    peak_memory_kind: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_forward(
    module: Model, inputs: torch.Tensor, repeats: int, budget_s: float
) -> list[float]:
    """Wall times of ``repeats`` forward passes (fewer if ``budget_s`` runs out), after warm-up.

    Three warm-up calls let TorchScript's profiling executor optimise the graph first.
    """
    with torch.inference_mode():
        for _ in range(3):
            module(inputs)
        _sync(inputs.device)
        times: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
            start = time.perf_counter()
            module(inputs)
            _sync(inputs.device)
            times.append(time.perf_counter() - start)
    return times


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def profile_model(
    model: LoadedModel, input_shape: tuple[int, int, int], batch_size: int, seed: int = 0
) -> ArchitectureProfile:
    """Profile the model at one input size.

    Args:
        model: The loaded model.
        input_shape: ``(C, H, W)`` of one preprocessed image.
        batch_size: Batch size for the throughput measurement.
        seed: Seed of the random input images.

    Raises:
        ModelError: The model fails on an input of this shape.
    """
    try:
        return _profile(model, input_shape, batch_size, seed)
    except MODEL_ERRORS as error:
        hint = "pass the image size and channels the model was trained with"
        if _runs_a_batch_of_two(model, input_shape):
            hint = (
                "it runs a batch of two: Auditor runs batches of any size, one included, "
                "so save the model without a fixed or minimum batch size"
            )
        raise forward_failed(model.path.name, (1, *input_shape), error, hint) from None


def _runs_a_batch_of_two(model: LoadedModel, input_shape: tuple[int, int, int]) -> bool:
    try:
        with torch.no_grad():
            model.module(torch.zeros((2, *input_shape), device=model.device))
    except MODEL_ERRORS:
        return False
    return True


def _layers(model: LoadedModel, one: torch.Tensor) -> tuple[LayerInfo, ...]:
    """Every submodule with its output shape, parameters, FLOPs and execution order."""
    tapped = model.tapped
    sites = tapped.sites
    with torch.no_grad():
        _, outputs = tapped(one, [s.path for s in sites])
    shapes = {
        s.path: tuple(int(d) for d in o.shape[1:]) for s, o in zip(sites, outputs, strict=True)
    }
    orders = {s.path: s.order for s in sites}
    types = {s.path: s.type_name for s in sites}
    _, flops_by_module = tapped.flops_by_module(one)
    return tuple(
        LayerInfo(
            path=entry.path,
            type_name=types.get(entry.path) or entry.type_name,
            output_shape=shapes.get(entry.path, ()),
            parameters=entry.parameters,
            flops=flops_by_module.get(entry.path, 0),
            order=orders.get(entry.path, 0),
        )
        for entry in tapped.modules()
    )


def _speed(
    model: LoadedModel, one: torch.Tensor, batch: torch.Tensor
) -> tuple[float, float, int, str]:
    """Median latency of one image (s), throughput at the batch (images/s), peak memory."""
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    latency = statistics.median(_time_forward(model.module, one, repeats=30, budget_s=1.0))
    batch_times = _time_forward(model.module, batch, repeats=10, budget_s=2.0)
    throughput = len(batch) / statistics.median(batch_times)
    if model.device.type == "cuda":
        peak, kind = int(torch.cuda.max_memory_allocated(model.device)), "CUDA peak allocated"
    else:
        peak, kind = _peak_rss_bytes(), "peak resident set size of the audit process"
    return latency, throughput, peak, kind


def _profile(
    model: LoadedModel, input_shape: tuple[int, int, int], batch_size: int, seed: int
) -> ArchitectureProfile:
    generator = torch.Generator().manual_seed(seed)
    one = torch.rand((1, *input_shape), generator=generator).to(model.device)
    layers = _layers(model, one)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.module(one)
    batch = torch.rand((batch_size, *input_shape), generator=generator).to(model.device)
    latency, throughput, peak, kind = _speed(model, one, batch)
    parameters = list(model.module.parameters())
    return ArchitectureProfile(
        layers=layers,
        input_shape=input_shape,
        parameters=sum(p.numel() for p in parameters),
        trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
        flops_per_image=int(counter.get_total_flops()),
        file_size=model.file_size,
        sha256=model.sha256,
        file_format=model.format,
        device=str(model.device),
        batch_size=batch_size,
        latency_ms=latency * 1000,
        throughput=throughput,
        peak_memory_bytes=peak,
        peak_memory_kind=kind,
    )


def choose_target_layer(layers: tuple[LayerInfo, ...]) -> LayerInfo | None:
    """The last module whose output is 4-D (C, H, W per image) with H*W above 1.

    When one output belongs to several nested modules (``layer4`` and ``layer4.1``),
    the outermost is chosen.
    """
    candidates = [
        layer
        for layer in layers
        if len(layer.output_shape) == 3 and layer.output_shape[1] * layer.output_shape[2] > 1
    ]
    if not candidates:
        return None
    last = max(layer.order for layer in candidates)
    return min(
        (layer for layer in candidates if layer.order == last),
        key=lambda layer: layer.path.count("."),
    )


def layers_frame(profile: ArchitectureProfile) -> pd.DataFrame:
    """The module table with explicit dtypes (``output_shape`` as ``"C×H×W"`` text)."""
    return pd.DataFrame(
        {
            "path": pd.Series([layer.path for layer in profile.layers], dtype="string"),
            "type": pd.Series([layer.type_name for layer in profile.layers], dtype="string"),
            "output_shape": pd.Series(
                [
                    "×".join(map(str, layer.output_shape)) if layer.output_shape else ""
                    for layer in profile.layers
                ],
                dtype="string",
            ),
            "parameters": pd.Series([layer.parameters for layer in profile.layers], dtype="int64"),
            "flops": pd.Series([layer.flops for layer in profile.layers], dtype="int64"),
        }
    )
