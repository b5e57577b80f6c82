"""Explain stage: run every selected method over the selected images, batched.

For each batch of (image, target) cases the gradient methods share one forward pass,
one plain backward pass and, when a guided method runs, one guided backward pass
(:meth:`ExplainContext.passes`); the perturbation methods run their passes at batch
sizes measured on this device. A batch that runs out of memory is retried at half the
size (the sizes used are recorded); any other failure becomes ``failed`` rows.

The stage's output, :class:`Explanations`, carries what the measure stage needs to
work on: the cases (integer targets), the settings, the maps by case and method, and
the state the methods ran in (:meth:`Explanations.context`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from auditor.checkpoint import Memo
from auditor.data import Dataset
from auditor.explain import METHODS, ExplainContext, ExplainSettings, Method
from auditor.explain.batching import attribute_batch, set_pass_batches, shared_batches
from auditor.explain.description import MethodDescription, describe
from auditor.explain.features import FEATURE_IMAGES, FeatureMaps, Stage, first_filters, stage_maps
from auditor.explain.store import Case, MapStore
from auditor.images import Preprocessing, read_image
from auditor.load import LoadedModel, OutputKind, first_line
from auditor.multilabel.cases import label_cases
from auditor.select import Selection

__all__ = [
    "Case",
    "Explanations",
    "MethodDescription",
    "build_context",
    "explain_cases",
    "mean_colour",
]

Maps = dict[str, np.ndarray | str]

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
class Explanations:
    """Maps for the selected cases, and the state the methods ran in.

    Attributes:
        settings: The method settings the stage ran with.
        cases: Every selected case, in the order of :attr:`records` (maps are missing
            for the cases whose image could not be read or whose methods failed).
        classes: Class names, indexed by a case's ``target``.
        layer: Target layer of the layer-based methods, or ``None`` if the model has none.
        methods: The methods that ran, in report order.
        not_applicable: Key → reason, for the selected methods that cannot run on this model.
        records: One row per case and method that ran: ``index, path, group, role, target,
            method, status, detail`` (status ``ok`` or ``failed``).
        maps: The ``(H, W)`` float32 map before min-max of each ``ok`` row, by case and
            method.
        images: Sample index → ``(H, W, C)`` float32 display image in [0, 1] (missing if
            the file could no longer be read; its records say so).
        mean_colour: ``(C,)`` mean colour in [0, 1] of the explained images (the ``mean``
            integrated-gradients baseline), or ``None`` if no method ran on an image.
        seconds: Key → seconds spent on the method (the shared gradient passes under
            ``"gradient passes"``).
        batch_sizes: ``explain`` (cases per batch), ``forward`` and ``backward`` (images per
            pass of the perturbation methods), as finally used.
        filters: ``(N, k, k, C)`` first-convolution filters in [0, 1], or ``None``.
        features: Strongest activation maps per stage for the first explained images.
    """

    settings: ExplainSettings
    cases: tuple[Case, ...]
    classes: tuple[str, ...]
    layer: str | None
    methods: tuple[MethodDescription, ...]
    not_applicable: dict[str, str]
    records: pd.DataFrame
    maps: MapStore = field(repr=False)
    images: dict[int, np.ndarray] = field(repr=False)
    mean_colour: tuple[float, ...] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    batch_sizes: dict[str, int] = field(default_factory=dict)
    filters: np.ndarray | None = field(default=None, repr=False)
    features: FeatureMaps = field(default_factory=lambda: FeatureMaps((), {}), repr=False)

    @property
    def ran(self) -> tuple[str, ...]:
        """Keys of the methods that ran, in report order."""
        return tuple(d.key for d in self.methods)

    @cached_property
    def _by_key(self) -> dict[tuple[int, str], Case]:
        return {(case.index, case.role): case for case in self.cases}

    def case(self, index: int, role: str) -> Case | None:
        """The case of sample ``index`` explained for ``role``, or ``None`` if not selected."""
        return self._by_key.get((index, role))

    def context(
        self, model: LoadedModel, kind: OutputKind, preprocessing: Preprocessing
    ) -> tuple[ExplainContext, list[Method]]:
        """The context and the methods as this stage left them, for more maps of its kind.

        The context has the batch sizes finally used and the explained images' mean
        colour; ``model`` may be another of the same graph (see
        :meth:`ExplainContext.with_model`).
        """
        context, methods, _ = build_context(model, kind, self.layer, self.settings, preprocessing)
        context.forward_batch = self.batch_sizes.get("forward", context.forward_batch)
        context.backward_batch = self.batch_sizes.get("backward", context.backward_batch)
        if self.mean_colour is not None:
            context.mean_colour = torch.tensor(self.mean_colour, dtype=torch.float32)
        return context, [m for m in methods if m.key in self.ran]


def _cases(selection: Selection, predictions: pd.DataFrame, classes: tuple[str, ...]) -> list[Case]:
    """One case per (image, role); an image both misclassified and sampled is explained once."""
    rows = predictions.set_index("index")
    cases = []
    for group, index in selection.images():
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


def _load_images(
    cases: list[Case], dataset: Dataset, preprocessing: Preprocessing
) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
    """Display images ``(C, H, W)`` in [0, 1] by sample index, and the unreadable ones' errors."""
    images: dict[int, torch.Tensor] = {}
    errors: dict[int, str] = {}
    for index in dict.fromkeys(case.index for case in cases):
        try:
            image, _ = read_image(dataset.samples[index].path, preprocessing.max_pixels)
            images[index] = preprocessing.display(image)
        except OSError as error:  # changed or removed since it was evaluated
            errors[index] = first_line(error)
    return images, errors


class _Outcome:
    """Each (case, method)'s status and detail, and the maps of those that worked."""

    def __init__(self) -> None:
        self.status: dict[tuple[Case, str], tuple[str, str]] = {}
        self.maps = MapStore()

    def fail(self, cases: Iterable[Case], methods: list[Method], detail: str) -> None:
        for case in cases:
            for method in methods:
                self.status[(case, method.key)] = ("failed", detail)

    def add(self, cases: list[Case], results: dict[str, np.ndarray | str]) -> None:
        """Record one batch's results (maps ``(B, H, W)`` or an error, by method key)."""
        for key, result in results.items():
            for i, case in enumerate(cases):
                if isinstance(result, str):
                    self.status[(case, key)] = ("failed", result)
                else:
                    self.status[(case, key)] = ("ok", "")
                    self.maps.put(case, key, result[i])


def _explain_in_batches(
    context: ExplainContext,
    methods: list[Method],
    cases: list[Case],
    display: dict[int, torch.Tensor],
    batch_size: int,
    outcome: _Outcome,
    seconds: dict[str, float],
    memo: Memo | None = None,
) -> int:
    """Run ``methods`` over ``cases``, ``batch_size`` at a time; returns the size used last.

    A batch that runs out of memory is halved, and the perturbation methods' batch sizes
    shrink in proportion; a case that does not fit alone becomes ``failed`` rows. With a
    ``memo``, each batch's maps are saved as it finishes (and read back when saved).
    """
    seed = context.settings.seed

    def run(start: int, stop: int) -> tuple[Maps, dict[str, float]]:
        chunk, timing = cases[start:stop], dict[str, float]()

        def attributed() -> Maps:
            images = torch.stack([display[c.index] for c in chunk])
            targets = torch.tensor([c.target for c in chunk])
            seeds = [seed + c.index for c in chunk]
            return attribute_batch(context, methods, images, targets, seeds, timing)

        maps = attributed() if memo is None else memo(f"explain-{start:06d}-{stop:06d}", attributed)
        return maps, timing

    size = batch_size
    progress = tqdm(total=len(cases), desc="explain", unit="map", leave=False, disable=None)
    for span in shared_batches(run, len(cases), batch_size, "explanation batch"):
        chunk = cases[span.start : span.stop]
        if span.result is None:
            outcome.fail(chunk, methods, span.error)
        else:
            maps, timing = span.result
            outcome.add(chunk, maps)
            for key, taken in timing.items():  # a sharded run's: every rank's batches
                seconds[key] = seconds.get(key, 0.0) + taken
        if span.halved:  # ran out of memory: smaller batches from now on
            context.forward_batch = max(1, context.forward_batch * span.size // span.tried)
            context.backward_batch = max(1, context.backward_batch * span.size // span.tried)
        size = span.size
        progress.update(len(chunk))
    progress.close()
    return size


def _records(
    cases: list[Case], methods: list[Method], outcome: _Outcome, dataset: Dataset
) -> pd.DataFrame:
    """One typed row per case and method (``explanations.csv``)."""
    rows = [
        {
            "index": case.index,
            "path": dataset.samples[case.index].relpath,
            "group": case.group,
            "role": case.role,
            "target": dataset.classes[case.target],
            "method": method.key,
            "status": outcome.status[(case, method.key)][0],
            "detail": outcome.status[(case, method.key)][1],
        }
        for case in cases
        for method in methods
    ]
    return pd.DataFrame(rows, columns=list(_RECORD_DTYPES)).astype(_RECORD_DTYPES)


def _feature_maps(
    model: LoadedModel,
    stages: tuple[Stage, ...],
    cases: list[Case],
    display: dict[int, torch.Tensor],
    preprocessing: Preprocessing,
    n: int,
) -> FeatureMaps:
    """The stages' strongest activation maps for the first ``n`` images (half misclassified)."""
    first = [c.index for c in cases if c.group == "misclassified"][: n // 2]
    first += [c.index for c in cases if c.group == "sampled"][: n - len(first)]
    shown = {i: preprocessing.normalise(display[i]) for i in dict.fromkeys(first)}
    return stage_maps(model, stages, shown)


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
    feature_images: int = FEATURE_IMAGES,
    memo: Memo | None = None,
) -> Explanations:
    """Compute every selected method that applies to the model for the selected images.

    Misclassified images are explained for the predicted and the true class, sampled
    ones for the predicted class (a multi-label model's: :func:`~auditor.multilabel.
    cases.label_cases`). The strongest activation maps of ``stages`` are kept for the
    first ``feature_images`` images (half misclassified, half sampled); with a ``memo``,
    each batch of cases is saved as it finishes (see :mod:`auditor.checkpoint`)."""
    context, methods, not_applicable = build_context(model, kind, layer, settings, preprocessing)
    choose = label_cases if dataset.multi_label else _cases
    cases = choose(selection, predictions, dataset.classes)
    display, unreadable = _load_images(cases, dataset, preprocessing)
    outcome = _Outcome()
    for case in cases:
        if case.index in unreadable:
            outcome.fail([case], methods, unreadable[case.index])
    readable = [case for case in cases if case.index in display]
    seconds: dict[str, float] = {}
    if readable and methods:
        context.mean_colour = mean_colour(display.values())
        example = preprocessing.normalise(display[readable[0].index]).to(model.device)
        set_pass_batches(context, methods, example, batch_size, settings.pass_batches)
    size = _explain_in_batches(
        context, methods, readable, display, batch_size, outcome, seconds, memo
    )
    height, width = display[readable[0].index].shape[-2:] if readable else (0, 0)
    colour = context.mean_colour
    return Explanations(
        settings=settings,
        cases=tuple(cases),
        classes=dataset.classes,
        layer=layer,
        methods=tuple(describe(m, context, (int(height), int(width))) for m in methods),
        not_applicable=not_applicable,
        records=_records(cases, methods, outcome, dataset),
        maps=outcome.maps,
        images={i: image.permute(1, 2, 0).numpy() for i, image in display.items()},
        mean_colour=None if colour is None else tuple(float(c) for c in colour),
        seconds=seconds,
        batch_sizes={
            "explain": size,
            "forward": context.forward_batch,
            "backward": context.backward_batch,
        },
        filters=first_filters(model),
        features=_feature_maps(model, stages, readable, display, preprocessing, feature_images),
    )
