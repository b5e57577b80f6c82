"""Explain stage: run every selected method over the selected images, batched.

For each batch of (image, target) cases the gradient methods share one forward pass,
one plain backward pass and, when a guided method runs, one guided backward pass
(:meth:`ExplainContext.passes`); the perturbation methods run their passes at batch
sizes measured on this device. A batch that runs out of memory is retried at half the
size (the sizes used are recorded); any other failure becomes ``failed`` rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from auditor.data import Dataset
from auditor.explain import METHODS, Batch, ExplainContext, ExplainSettings, Method, PassCount
from auditor.explain.batching import halving_on_oom, is_oom, measure_batch_size
from auditor.explain.features import FeatureMaps, Stage, first_filters, stage_maps
from auditor.images import Preprocessing, read_image
from auditor.load import LoadedModel, OutputKind, first_line
from auditor.select import Selection

__all__ = [
    "Case",
    "Explanations",
    "MethodDescription",
    "attribute_batch",
    "build_context",
    "explain_cases",
    "mean_colour",
    "resume_context",
]

log = logging.getLogger(__name__)

_RECORD_DTYPES = {
    "index": "int64",
    "path": "string",
    "group": "string",
    "role": "string",
    "target": "string",
    "method": "string",
    "status": "string",
    "detail": "string",
}


@dataclass(frozen=True)
class Case:
    """One (image, target class) pair to explain.

    Attributes:
        index: Sample index of the image.
        group: ``"misclassified"`` or ``"sampled"`` (an image in both is ``misclassified``).
        role: ``"predicted"`` or ``"true"`` (the class the map explains).
        target: Class index explained.
    """

    index: int
    group: str
    role: str
    target: int


@dataclass(frozen=True)
class MethodDescription:
    """What the report says about a method that ran.

    Attributes:
        key, title, paper, implementation, reading, caveat: From the method's class.
        layer: ``"input"``, the target layer's path, or the head's pooled feature map.
        steps: Post-processing steps, in order (``min-max`` for display is not listed).
        settings: Its settings in words ("" if none).
        passes: Passes per image beyond the shared gradient passes.
    """

    key: str
    title: str
    paper: str
    implementation: str
    reading: str
    caveat: str
    layer: str
    steps: tuple[str, ...]
    settings: str
    passes: PassCount


def describe(method: Method, context: ExplainContext, size: tuple[int, int]) -> MethodDescription:
    """The report's description of ``method`` as it runs in ``context``."""
    if method.needs_head:
        layer = "feature map pooled by the head"
    elif method.uses_layer:
        layer = context.layer or "—"
    else:
        layer = "input"
    return MethodDescription(
        key=method.key,
        title=method.title,
        paper=method.paper,
        implementation=method.implementation,
        reading=method.reading,
        caveat=method.caveat,
        layer=layer,
        steps=tuple(method.postprocessing),
        settings=method.settings_text(),
        passes=method.passes_per_image(context, size),
    )


@dataclass(frozen=True)
class Explanations:
    """Maps for the selected cases.

    Attributes:
        layer: Target layer of the layer-based methods, or ``None`` if the model has none.
        methods: The methods that ran, in report order.
        not_applicable: Key → reason, for the selected methods that cannot run on this model.
        records: One row per case and method that ran: ``index, path, group, role, target,
            method, status, detail`` (status ``ok`` or ``failed``).
        maps: ``(index, role, method)`` → ``(H, W)`` float32 map before min-max.
        images: Sample index → ``(H, W, C)`` float32 display image in [0, 1] (missing if
            the file could no longer be read; its records say so).
        seconds: Key → seconds spent on the method (the shared gradient passes under
            ``"gradient passes"``).
        batch_sizes: ``explain`` (cases per batch), ``forward`` and ``backward`` (images per
            pass of the perturbation methods), as finally used.
        filters: ``(N, k, k, C)`` first-convolution filters in [0, 1], or ``None``.
        features: Strongest activation maps per stage for the first explained images.
    """

    layer: str | None
    methods: tuple[MethodDescription, ...]
    not_applicable: dict[str, str]
    records: pd.DataFrame
    maps: dict[tuple[int, str, str], np.ndarray] = field(repr=False)
    images: dict[int, np.ndarray] = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    batch_sizes: dict[str, int] = field(default_factory=dict)
    filters: np.ndarray | None = field(default=None, repr=False)
    features: FeatureMaps = field(default_factory=lambda: FeatureMaps((), {}), repr=False)


def _cases(selection: Selection, predictions: pd.DataFrame, classes: tuple[str, ...]) -> list[Case]:
    """One case per (image, role); an image both misclassified and sampled is explained once."""
    rows = predictions.set_index("index")
    cases = []
    done: set[int] = set()
    for group, indices in (
        ("misclassified", selection.misclassified),
        ("sampled", selection.sampled),
    ):
        for index in indices:
            if index in done:
                continue
            done.add(index)
            row = rows.loc[index]
            cases.append(Case(index, group, "predicted", classes.index(str(row["prediction"]))))
            if not bool(row["correct"]):
                cases.append(Case(index, group, "true", classes.index(str(row["label"]))))
    return cases


def build_context(
    model: LoadedModel,
    kind: OutputKind,
    layer: str | None,
    settings: ExplainSettings,
    preprocessing: Preprocessing,
) -> tuple[ExplainContext, list[Method], dict[str, str]]:
    """The methods that can run on this model, the context they share, and why others cannot."""
    probe = ExplainContext(model, kind, layer, settings, preprocessing)
    methods: list[Method] = []
    not_applicable: dict[str, str] = {}
    for key in settings.methods:
        method = METHODS[key](settings)
        reason = method.not_applicable(probe)
        if reason is None:
            methods.append(method)
        else:
            not_applicable[key] = reason
    context = ExplainContext(
        model,
        kind,
        layer,
        settings,
        preprocessing,
        guided=any(m.needs_guided for m in methods),
        head=any(m.needs_head for m in methods),
        gradients=any(m.needs_passes and m.needs_gradients for m in methods),
    )
    return context, methods, not_applicable


def mean_colour(images: Iterable[torch.Tensor]) -> torch.Tensor:
    """``(C,)`` mean colour of ``(C, H, W)`` images in [0, 1] (the ``mean`` IG baseline)."""
    return torch.stack(list(images)).mean(dim=(0, 2, 3))


def resume_context(
    model: LoadedModel,
    kind: OutputKind,
    settings: ExplainSettings,
    preprocessing: Preprocessing,
    explanations: Explanations,
) -> tuple[ExplainContext, list[Method]]:
    """The context and methods the explain stage ran, as it left them (batch sizes and mean
    colour), for later work on its maps with the same methods."""
    context, methods, _ = build_context(model, kind, explanations.layer, settings, preprocessing)
    ran = {m.key for m in explanations.methods}
    context.forward_batch = explanations.batch_sizes.get("forward", context.forward_batch)
    context.backward_batch = explanations.batch_sizes.get("backward", context.backward_batch)
    if explanations.images:
        images = explanations.images.values()
        context.mean_colour = mean_colour(torch.from_numpy(i).permute(2, 0, 1) for i in images)
    return context, [m for m in methods if m.key in ran]


def measure_batches(context: ExplainContext, methods: list[Method], example: torch.Tensor) -> None:
    """Set the context's forward and backward batch sizes by timing passes on ``example``."""
    if not any(m.perturbation for m in methods):
        return

    @torch.no_grad()
    def forward(x: torch.Tensor) -> object:
        return context.class_scores(x)

    def backward(x: torch.Tensor) -> object:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            return torch.autograd.grad(context.class_scores(x)[:, 0].sum(), x)

    context.forward_batch = measure_batch_size(forward, example)
    context.backward_batch = measure_batch_size(backward, example)


def _load_images(
    cases: list[Case], dataset: Dataset, preprocessing: Preprocessing
) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
    """Display images ``(C, H, W)`` in [0, 1] by sample index, and the unreadable ones' errors."""
    images: dict[int, torch.Tensor] = {}
    errors: dict[int, str] = {}
    for index in dict.fromkeys(case.index for case in cases):
        try:
            image, _ = read_image(dataset.samples[index].path)
        except OSError as error:  # changed or removed since it was evaluated
            errors[index] = first_line(error)
            continue
        images[index] = preprocessing.display(image)
    return images, errors


def attribute_batch(
    context: ExplainContext,
    methods: list[Method],
    display: torch.Tensor,
    targets: torch.Tensor,
    seeds: list[int],
    seconds: dict[str, float] | None = None,
) -> dict[str, np.ndarray | str]:
    """Every method's maps for one batch, sharing the gradient passes.

    Args:
        context: The model as the methods see it.
        methods: Methods to run (from :func:`build_context`).
        display: ``(B, C, H, W)`` images in [0, 1], on the CPU.
        targets: ``(B,)`` class indices to explain.
        seeds: One seed per image for the methods that draw random numbers.
        seconds: Where to add each method's time (and ``"gradient passes"``), if given.

    Returns:
        Key → ``(B, H, W)`` float32 maps before min-max, or the first line of the error
        that stopped the method on this batch.

    Raises:
        RuntimeError: The batch ran out of device memory (the caller halves it).
    """
    device = context.model.device
    batch = Batch(
        inputs=context.normalise(display).to(device),
        display=display,
        targets=targets.to(device),
        seeds=seeds,
    )
    clock = seconds if seconds is not None else {}
    results: dict[str, np.ndarray | str] = {}
    if any(m.needs_passes for m in methods):
        start = time.perf_counter()
        try:
            batch.passes = context.passes(batch.inputs, batch.targets)
            if batch.passes.activations.numel():
                context.layer_channels = int(batch.passes.activations.shape[1])
        except (RuntimeError, ValueError) as error:
            if is_oom(error):
                raise
            log.warning("gradient passes failed: %s", error)
            results.update({m.key: first_line(error) for m in methods if m.needs_passes})
        clock["gradient passes"] = clock.get("gradient passes", 0.0) + (time.perf_counter() - start)
    for method in methods:
        if method.key in results:
            continue
        start = time.perf_counter()
        try:
            results[method.key] = method.attribute(batch, context).cpu().numpy()
        except (RuntimeError, ValueError) as error:
            if is_oom(error):
                raise
            log.warning("%s failed on a batch: %s", method.key, error)
            results[method.key] = first_line(error)
        clock[method.key] = clock.get(method.key, 0.0) + time.perf_counter() - start
    return results


def explain_cases(
    model: LoadedModel,
    dataset: Dataset,
    preprocessing: Preprocessing,
    predictions: pd.DataFrame,
    selection: Selection,
    kind: OutputKind,
    layer: str | None,
    settings: ExplainSettings,
    batch_size: int,
    stages: tuple[Stage, ...] = (),
    feature_images: int = 4,
) -> Explanations:
    """Compute every selected method that applies to the model for the selected images.

    Misclassified images are explained for the predicted and the true class; sampled
    images for the predicted class. The strongest activation maps of ``stages`` are
    kept for the first ``feature_images`` images (half misclassified, half sampled).
    """
    context, methods, not_applicable = build_context(model, kind, layer, settings, preprocessing)
    cases = _cases(selection, predictions, dataset.classes)
    display, unreadable = _load_images(cases, dataset, preprocessing)
    status: dict[tuple[int, str, str], tuple[str, str]] = {
        (c.index, c.role, m.key): ("failed", unreadable[c.index])
        for c in cases
        if c.index in unreadable
        for m in methods
    }
    readable = [case for case in cases if case.index in display]
    maps: dict[tuple[int, str, str], np.ndarray] = {}
    seconds: dict[str, float] = {}
    if readable and methods:
        context.mean_colour = mean_colour(display.values())
        example = preprocessing.normalise(display[readable[0].index]).to(model.device)
        measure_batches(context, methods, example)

    def run(chunk: list[Case]) -> None:
        results = attribute_batch(
            context,
            methods,
            torch.stack([display[c.index] for c in chunk]),
            torch.tensor([c.target for c in chunk]),
            [settings.seed + c.index for c in chunk],
            seconds,
        )
        for key, result in results.items():
            for i, case in enumerate(chunk):
                if isinstance(result, str):
                    status[(case.index, case.role, key)] = ("failed", result)
                else:
                    status[(case.index, case.role, key)] = ("ok", "")
                    maps[(case.index, case.role, key)] = result[i]

    height, width = display[readable[0].index].shape[-2:] if readable else (0, 0)
    preprocessing_size = (int(height), int(width))
    size = batch_size
    progress = tqdm(total=len(readable), desc="explain", unit="map", leave=False, disable=None)
    done = 0
    while done < len(readable):
        chunk = readable[done : done + size]

        def attempt(n: int, chunk: list[Case] = chunk) -> None:
            run(chunk[:n])

        try:
            _, used = halving_on_oom(attempt, size, "explanation batch")
        except RuntimeError as error:  # even one case does not fit
            if not is_oom(error):
                raise
            for case in chunk[:1]:
                for method in methods:
                    status[(case.index, case.role, method.key)] = ("failed", first_line(error))
            size = used = 1
        if used < size:  # ran out of memory: smaller batches from now on
            context.forward_batch = max(1, context.forward_batch * used // size)
            context.backward_batch = max(1, context.backward_batch * used // size)
            size = used
        used = min(used, len(chunk))
        done += used
        progress.update(used)
    progress.close()
    records = pd.DataFrame(
        [
            {
                "index": case.index,
                "path": dataset.samples[case.index].relpath,
                "group": case.group,
                "role": case.role,
                "target": dataset.classes[case.target],
                "method": method.key,
                "status": status[(case.index, case.role, method.key)][0],
                "detail": status[(case.index, case.role, method.key)][1],
            }
            for case in cases
            for method in methods
        ],
        columns=list(_RECORD_DTYPES),
    ).astype(_RECORD_DTYPES)
    first = [c.index for c in readable if c.group == "misclassified"][: feature_images // 2]
    first += [c.index for c in readable if c.group == "sampled"][: feature_images - len(first)]
    shown = {i: preprocessing.normalise(display[i]) for i in dict.fromkeys(first)}
    return Explanations(
        layer=layer,
        methods=tuple(describe(m, context, preprocessing_size) for m in methods),
        not_applicable=not_applicable,
        records=records,
        maps=maps,
        images={i: image.permute(1, 2, 0).numpy() for i, image in display.items()},
        seconds=seconds,
        batch_sizes={
            "explain": size,
            "forward": context.forward_batch,
            "backward": context.backward_batch,
        },
        filters=first_filters(model),
        features=stage_maps(model, stages, shown),
    )
