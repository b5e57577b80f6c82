"""The counterfactual stage: for the explained cases (misclassified first), the smallest
set of segments whose removal changes the call (:mod:`.segments`) and the smallest
gradient change that does (:mod:`.gradient`), each re-checked by a fresh forward pass,
with how much of each declared concept the change covers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torchvision.transforms.functional import gaussian_blur

from auditor.concepts.data import ConceptData
from auditor.concepts.stage import declared_masks
from auditor.counterfactual.gradient import GradientCounterfactual, gradient_counterfactuals
from auditor.counterfactual.labels import LabelFlip, label_flips
from auditor.counterfactual.segments import SegmentCounterfactual, segment_counterfactual
from auditor.counterfactual.settings import CounterfactualSettings
from auditor.data import Dataset
from auditor.explain.superpixels import slic_segments
from auditor.images import Preprocessing, make_loader
from auditor.load import LoadedModel, OutputKind, class_scores, to_probabilities
from auditor.measure.shortcuts import Shortcuts, share_in_region
from auditor.select import Selection

__all__ = ["Counterfactuals", "Shown", "counterfactuals", "fill_image"]


@dataclass(frozen=True)
class Shown:
    """One search's counterfactuals, for the report's images.

    Attributes:
        image: ``(H, W, C)`` the case in [0, 1].
        segments: Its segment counterfactual, or ``None``.
        gradient: Its gradient counterfactual, or ``None``.
        flip: A multi-label model's label flipped (the counterfactuals' classes are its
            two calls, their probabilities the label's), or ``None``.
    """

    index: int
    image: torch.Tensor
    segments: SegmentCounterfactual | None
    gradient: GradientCounterfactual | None
    flip: LabelFlip | None = None


@dataclass(frozen=True)
class Counterfactuals:
    """Every counterfactual searched.

    Attributes:
        frame: One row per search and kind (``counterfactuals.csv``; a search per case, a
            multi-label model's misclassified image one per wrong call): ``index, path, role,
            label, prediction, kind, valid, new_class, probability, segments, pixels,
            l1, passes, irreducible, steps``, ``shortcut_region`` and
            ``in_shortcut_region`` (the flagged shortcut region of the case's group and
            the share of the change inside it; empty when its group is not flagged),
            a multi-label model's ``flipped_label`` (``new_class`` is then ``<label>`` or
            ``not <label>`` and ``probability`` the label's), and
            ``covers_<concept>`` (the share of the concept's mask the change covers;
            empty where the image does not show it).
        shown: Each search's images and counterfactuals, in the frame's order.
        fill: What replaced a removed segment.
        left_out: A multi-label model's wrong calls not searched, beyond the
            ``counterfactual-labels`` most confident of their image.
    """

    frame: pd.DataFrame
    shown: tuple[Shown, ...]
    fill: str
    concepts: tuple[str, ...]
    artifacts: tuple[str, ...]
    passes: int
    seconds: float
    settings: CounterfactualSettings
    left_out: int = 0


def fill_image(image: torch.Tensor, fill: str) -> torch.Tensor:
    """``(C, H, W)`` what a removed segment shows: the image blurred (Gaussian, sigma a
    tenth of its side), its mean colour, black or white."""
    if fill == "blur":
        sigma = max(image.shape[1:]) / 10
        kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(image.shape[1:]) // 2) - 1)
        return gaussian_blur(image[None], [max(kernel, 1)] * 2, [sigma, sigma])[0]
    if fill == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image).clone()
    return torch.full_like(image, 0.0 if fill == "black" else 1.0)


def _cases(predictions: pd.DataFrame, selection: Selection, limit: int) -> list[tuple[int, str]]:
    """The explained images, misclassified first, each once (an image both misclassified
    and sampled is misclassified: :meth:`~auditor.select.Selection.images`)."""
    evaluated = set(predictions["index"].tolist())
    roles = [(i, role) for role, i in selection.images()]
    return [(i, role) for i, role in roles if i in evaluated][:limit]


def _covers(change: torch.Tensor, masks: torch.Tensor, annotated: torch.Tensor) -> list[float]:
    """The share of each concept's mask (``(K, H, W)``) that ``change`` covers; NaN where
    the image is not annotated with the concept or does not show it."""
    covered = []
    for mask, known in zip(masks, annotated, strict=True):
        area = int(mask.sum())
        covered.append(float((change & mask).sum()) / area if known and area else math.nan)
    return covered


def counterfactuals(
    model: LoadedModel, dataset: Dataset, preprocessing: Preprocessing,
    predictions: pd.DataFrame, selection: Selection, kind: OutputKind, concepts: ConceptData,
    settings: CounterfactualSettings, superpixels: int, shortcuts: Shortcuts | None = None,
    thresholds: tuple[float, ...] = (),
) -> Counterfactuals | None:  # fmt: skip
    """Both kinds of counterfactual for up to ``counterfactual-images`` explained cases
    (a multi-label model's, at its labels' ``thresholds``, flip one label a search, a
    misclassified image's each of its wrong calls: see :mod:`.labels`); ``None`` when
    switched off or no case could be read."""
    cases = _cases(predictions, selection, settings.counterfactual_images)
    if not cases:
        return None
    started = time.perf_counter()
    display = replace(preprocessing, mean=None, std=None)
    samples = [dataset.samples[i] for i, _ in cases]
    batches = list(make_loader(samples, display, max(1, settings.batch_size)))
    images = {int(i): x for b in batches for i, x in zip(b.indices, b.images, strict=True)}
    readable = [(i, role) for i, role in cases if i in images]
    if not readable:
        return None

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            output = model.module(preprocessing.normalise(x).to(model.device))
            return to_probabilities(output, kind).cpu()

    def scores(x: torch.Tensor) -> torch.Tensor:
        output, _ = model.tapped(preprocessing.normalise(x).to(model.device))
        return class_scores(output, kind).cpu()

    flips: list[LabelFlip | None] = [None] * len(readable)
    left_out = 0
    if dataset.multi_label:
        searches, left_out = label_flips(
            predictions, readable, dataset.classes, thresholds, kind.probabilities,
            settings.counterfactual_labels,
        )  # fmt: skip
        readable = [(index, role) for index, role, _ in searches]
        flips = [flip for _, _, flip in searches]
    prepared = _prepared(
        readable, images, predictions, dataset, concepts, preprocessing, shortcuts, flips
    )
    found = _search(prepared, probabilities, scores, dataset.classes, settings, superpixels,
                    started)  # fmt: skip
    return replace(found, left_out=left_out)


Probabilities = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Cases:
    """The searches: their cases (``(index, role)``, a multi-label model's image once
    per label it flips), images (by index), calls, labels flipped and concept masks (by
    position)."""

    cases: list[tuple[int, str]]
    images: dict[int, torch.Tensor]
    original: list[int]
    base: dict[int, dict[str, object]]  # by index: its path, label and prediction
    masks: torch.Tensor
    annotated: torch.Tensor
    concepts: tuple[str, ...]
    regions: dict[int, str]
    flips: list[LabelFlip | None]
    artifacts: tuple[str, ...]

    def scorers(
        self, position: int, probabilities: Probabilities, scores: Probabilities
    ) -> tuple[Probabilities, Probabilities]:
        """Search ``position``'s probabilities and scores: a multi-label model's label
        read as a two-class model (:class:`~auditor.counterfactual.labels.LabelFlip`)."""
        flip = self.flips[position]
        if flip is None:
            return probabilities, scores
        return (lambda x: flip.probabilities(probabilities(x))), (lambda x: flip.scores(scores(x)))

    def outcome(self, position: int, new_class: int, probability: float,
                classes: tuple[str, ...]) -> tuple[str, float, dict[str, object]]:  # fmt: skip
        """The new call in words, its probability (a multi-label model's: the label's) and
        the row's ``flipped_label`` (multi-label only)."""
        flip = self.flips[position]
        if flip is None:
            return (classes[new_class] if new_class >= 0 else ""), probability, {}
        if new_class < 0:
            return "", probability, {"flipped_label": flip.name}
        kept = flip.label_probability(new_class, probability)
        return flip.calls[new_class], kept, {"flipped_label": flip.name}

    def row(self, position: int, change: torch.Tensor, **values: object) -> dict[str, object]:
        """A row of ``counterfactuals.csv``: the case and its role, ``values``, the
        shortcut region and the concepts covered."""
        covers = _covers(change, self.masks[position], self.annotated[position])
        index, role = self.cases[position]
        region = self.regions.get(index, "")
        inside = share_in_region(change.numpy(), region) if region else math.nan
        case = self.base[index]
        found = {"index": index, "path": case["path"], "role": role, "label": case["label"],
                 "prediction": case["prediction"], **values, "shortcut_region": region,
                 "in_shortcut_region": inside}  # fmt: skip
        return found | {f"covers_{c}": v for c, v in zip(self.concepts, covers, strict=True)}


def _prepared(
    cases: list[tuple[int, str]], images: dict[int, torch.Tensor], predictions: pd.DataFrame,
    dataset: Dataset, concepts: ConceptData, preprocessing: Preprocessing,
    shortcuts: Shortcuts | None, flips: list[LabelFlip | None],
) -> _Cases:  # fmt: skip
    first = images[cases[0][0]]
    size = (int(first.shape[1]), int(first.shape[2]))
    indices = torch.tensor([i for i, _ in cases])
    masks, annotated = declared_masks(dataset, concepts, indices, preprocessing, size)
    rows = predictions.set_index("index")
    base: dict[int, dict[str, object]] = {
        i: {"index": i, "path": rows.at[i, "path"], "label": rows.at[i, "label"],
            "prediction": rows.at[i, "prediction"]}
        for i, _ in cases
    }  # fmt: skip
    original = [
        flip.original if flip else dataset.classes.index(str(rows.at[i, "prediction"]))
        for (i, _), flip in zip(cases, flips, strict=True)
    ]
    regions = {i: _region(shortcuts, str(rows.at[i, "label"]), str(rows.at[i, "prediction"]))
               for i, _ in cases}  # fmt: skip
    return _Cases(
        cases, images, original, base, masks, annotated, concepts.declared,
        {i: r for i, r in regions.items() if r}, flips,
        tuple(c for c in concepts.declared if c in concepts.artifacts),
    )  # fmt: skip


def _region(shortcuts: Shortcuts | None, label: str, prediction: str) -> str:
    """The flagged shortcut region of a case's group: its error type's, else its
    predicted class's ("" when neither is flagged)."""
    if shortcuts is None:
        return ""
    error = f"{label} → {prediction}"
    for kind, name in (("error", error), ("class", prediction)):
        for group in shortcuts.flagged:
            if group.kind == kind and group.name == name:
                return group.region
    return ""


def _segments(
    prepared: _Cases, probabilities: Probabilities, classes: tuple[str, ...],
    settings: CounterfactualSettings, superpixels: int,
) -> tuple[list[dict[str, object]], list[SegmentCounterfactual]]:  # fmt: skip
    rows, found = [], []
    for position, (index, _) in enumerate(prepared.cases):
        image = prepared.images[index]
        fill = fill_image(image, settings.counterfactual_fill)
        scorer, _ = prepared.scorers(position, probabilities, probabilities)
        result = segment_counterfactual(
            image, slic_segments(image, superpixels), fill, scorer,
            prepared.original[position], settings.counterfactual_segments,
            settings.counterfactual_passes, settings.batch_size,
        )  # fmt: skip
        new, probability, flipped = prepared.outcome(
            position, result.new_class, result.probability, classes
        )
        result = replace(result, probability=probability)
        rows.append(prepared.row(
            position, result.mask, kind="segments", valid=result.valid, new_class=new,
            probability=result.probability if new else math.nan,
            segments=len(result.segments), pixels=float(result.mask.float().mean()),
            l1=float((result.image - image).abs().mean()), passes=result.passes,
            irreducible=result.irreducible, steps=math.nan, **flipped,
        ))  # fmt: skip
        found.append(result)
    return rows, found


def _groups(
    prepared: _Cases, probabilities: Probabilities, scores: Probabilities
) -> list[tuple[list[int], tuple[Probabilities, Probabilities]]]:
    """The searches' positions run together, and their probabilities and scores: all at
    once, or a multi-label model's by the label they flip."""
    by_label: dict[int, list[int]] = {}
    for position, flip in enumerate(prepared.flips):
        by_label.setdefault(-1 if flip is None else flip.label, []).append(position)
    return [
        (positions, prepared.scorers(positions[0], probabilities, scores))
        for positions in by_label.values()
    ]


def _gradients(
    prepared: _Cases, probabilities: Probabilities, scores: Probabilities,
    classes: tuple[str, ...], settings: CounterfactualSettings,
) -> tuple[list[dict[str, object]], list[GradientCounterfactual]]:  # fmt: skip
    """Towards the most probable class other than the call (a multi-label model's: the
    label's other call), a batch of images at a time."""
    found: dict[int, GradientCounterfactual] = {}
    for positions, (probable, score) in _groups(prepared, probabilities, scores):
        indices = [prepared.cases[p][0] for p in positions]
        stacked = torch.stack([prepared.images[i] for i in indices])
        ranked = probable(stacked).argsort(dim=1, descending=True)
        calls = torch.tensor([prepared.original[p] for p in positions])
        targets = torch.where(ranked[:, 0] == calls, ranked[:, 1], ranked[:, 0])
        for part in torch.arange(len(stacked)).split(max(1, settings.batch_size)):
            results, _ = gradient_counterfactuals(
                stacked[part], targets[part], score, probable, settings.wachter_steps,
                settings.wachter_lr, settings.wachter_l1, settings.wachter_tv,
            )  # fmt: skip
            found |= {positions[int(k)]: g for k, g in zip(part, results, strict=True)}
    rows, kept = [], []
    for position in range(len(prepared.cases)):
        g = found[position]
        new, probability, flipped = prepared.outcome(position, g.new_class, g.probability, classes)
        g = replace(g, probability=probability)
        rows.append(prepared.row(
            position, g.changed, kind="gradient", valid=g.valid, new_class=new,
            probability=g.probability, segments=math.nan, pixels=float(g.changed.float().mean()),
            l1=g.l1, passes=g.passes, irreducible=math.nan, steps=g.steps, **flipped,
        ))  # fmt: skip
        kept.append(g)
    return rows, kept


def _search(
    prepared: _Cases, probabilities: Probabilities, scores: Probabilities,
    classes: tuple[str, ...], settings: CounterfactualSettings, superpixels: int,
    started: float,
) -> Counterfactuals:  # fmt: skip
    rows, segments = _segments(prepared, probabilities, classes, settings, superpixels)
    cases, images = prepared.cases, prepared.images
    gradients: list[GradientCounterfactual | None] = [None] * len(cases)
    if settings.wachter_steps:
        more, found = _gradients(prepared, probabilities, scores, classes, settings)
        rows += more
        gradients = list(found)
    shown = tuple(
        Shown(i, images[i].permute(1, 2, 0), s, g, flip)
        for (i, _), s, g, flip in zip(cases, segments, gradients, prepared.flips, strict=True)
    )
    frame = pd.DataFrame(rows)
    return Counterfactuals(
        frame, shown, settings.counterfactual_fill, prepared.concepts, prepared.artifacts,
        int(frame["passes"].sum()), time.perf_counter() - started, settings,
    )  # fmt: skip
