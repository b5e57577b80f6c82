"""The TCAV stage: does each class's score move along each concept, at one layer (see
:mod:`auditor.concepts.tcav`)?

A concept's activation is the layer's output averaged over the concept's region of an
image in which it is present: the declared mask, or the computed concept's pixels. The
random sets, and the pseudo-concepts of the null, average it over a random box (a side of
15% to 50% of the image, seeded) of a seeded draw of validation images. So the concept
and its negatives are seen at the image's own scale and position, as regions of the same
size class: against whole images a CAV learns "a region" as much as the concept (the
demo's marker CAV then said "skin without a lesion"); against zoomed crops it learns the
zoom. The CAVs live in channel space (``pool``), so the concept's position in the class
images does not matter. A concept of ``concept-dir`` is whole images (resized to the
model's input), so its negatives and pseudo-concepts are whole validation images, drawn
with the random boxes' images. Each class's images are a seeded draw of the images of
that true class. Each drawn image is read once per set and run forward once per kind of
region; each class's images also once backward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from auditor.concepts.data import ConceptData, computed_masks
from auditor.concepts.settings import ConceptSettings
from auditor.concepts.stage import declared_masks
from auditor.concepts.tcav import concept_vectors, layer_activations, layer_gradients, tcav
from auditor.data import Dataset
from auditor.images import Preprocessing, make_loader, open_image
from auditor.load import LoadedModel, OutputKind

__all__ = ["ConceptTests", "TcavRow", "concept_tests"]

MIN_CONCEPT_IMAGES = 5
"""Fewer images with a region of the concept than this and it is not tested."""


@dataclass(frozen=True)
class TcavRow:
    """One class and concept: the TCAV score and magnitude over the runs, and the p-value."""

    target: str
    concept: str
    score: float
    score_low: float
    score_high: float
    magnitude: float
    p_value: float
    significant: bool


@dataclass(frozen=True)
class ConceptTests:
    """TCAV at one layer.

    Attributes:
        notes: ``(concept, note)``: concepts not tested (too few images) and folder
            images that could not be read.
        concept_images: Images (regions) per tested concept.
        set_size: Images per random set and per class.
        folders: The concepts from ``concept-dir`` (whole images).
        passes: Forward passes (each image once); ``backward``: backward passes.
    """

    layer: str
    rows: tuple[TcavRow, ...]
    notes: tuple[tuple[str, str], ...]
    concept_images: dict[str, int]
    set_size: int
    folders: tuple[str, ...]
    settings: ConceptSettings
    passes: int
    backward: int
    seconds: float


@dataclass(frozen=True)
class _Images:
    """Images read for one set: their sample indices and display pixels in [0, 1]."""

    indices: list[int]
    pixels: torch.Tensor


def _read(dataset: Dataset, indices: list[int], preprocessing: Preprocessing, batch: int
          ) -> _Images:  # fmt: skip
    """The display images of ``indices`` that could be read (unreadable ones are dropped
    here as the evaluation excluded them)."""
    display = replace(preprocessing, mean=None, std=None)
    kept, images = [], []
    for item in make_loader([dataset.samples[i] for i in indices], display, batch):
        kept += item.indices.tolist()
        images.append(item.images)
    return _Images(kept, torch.cat(images) if images else torch.empty(0))


def _random_regions(n: int, size: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """``(n, 1, H, W)``: one random box per image, its side 15% to 50% of the shorter side."""
    height, width = size
    sides = (rng.uniform(0.15, 0.5, n) * min(height, width)).astype(int).clip(1)
    tops = (rng.uniform(0, 1, n) * (height - sides + 1)).astype(int)
    lefts = (rng.uniform(0, 1, n) * (width - sides + 1)).astype(int)
    regions = torch.zeros(n, 1, height, width)
    for row, (top, left, side) in enumerate(zip(tops, lefts, sides, strict=True)):
        regions[row, 0, top : top + side, left : left + side] = 1
    return regions


def _activations(model: LoadedModel, preprocessing: Preprocessing, images: torch.Tensor,
                 regions: torch.Tensor, layer: str, batch: int) -> np.ndarray:  # fmt: skip
    normalised = preprocessing.normalise(images).to(model.device)
    return layer_activations(model.tapped, normalised, layer, batch, regions)


@dataclass(frozen=True)
class _Null:
    """Random sets of one kind (random boxes, or whole images) at the layer: the runs'
    negatives (``randoms``) and the pseudo-concepts' CAVs against them (``pseudo``)."""

    randoms: list[np.ndarray]
    pseudo: list[np.ndarray]


def _nulls(
    model: LoadedModel, dataset: Dataset, preprocessing: Preprocessing, evaluated: np.ndarray,
    layer: str, settings: ConceptSettings, rng: np.random.Generator, whole: bool,
) -> tuple[dict[str, _Null], int]:  # fmt: skip
    """The ``box`` null (and, with ``whole``, the ``whole``-image null, from the same
    images) and the forward passes they took."""
    n = min(settings.tcav_images, len(evaluated))
    sets: dict[str, list[np.ndarray]] = {"box": [], "whole": []}
    for _ in range(settings.tcav_runs + settings.tcav_pseudo):
        images = _read(dataset, sorted(rng.choice(evaluated, n, replace=False).tolist()),
                       preprocessing, settings.batch_size)  # fmt: skip
        height, width = images.pixels.shape[-2:]
        regions = {"box": _random_regions(len(images.indices), (height, width), rng)}
        if whole:
            regions["whole"] = torch.ones(len(images.indices), 1, height, width)
        for name, region in regions.items():
            sets[name].append(_activations(
                model, preprocessing, images.pixels, region, layer, settings.batch_size
            ))  # fmt: skip
    nulls = {}
    for name, family in sets.items():
        if family:
            randoms = family[: settings.tcav_runs]
            pseudo = [concept_vectors(p, randoms, settings.seed)
                      for p in family[settings.tcav_runs :]]  # fmt: skip
            nulls[name] = _Null(randoms, pseudo)
    return nulls, sum(len(s) for family in sets.values() for s in family)


def concept_tests(
    model: LoadedModel, dataset: Dataset, data: ConceptData, preprocessing: Preprocessing,
    predictions: pd.DataFrame, layer: str | None, settings: ConceptSettings,
    kind: OutputKind = OutputKind.LOGITS,
) -> ConceptTests | None:  # fmt: skip
    """TCAV of every concept (declared, computed and from folders) for every class at
    ``layer``, or ``None`` when it is switched off (``tcav-runs`` 0), there is no concept
    or no layer. Concepts with masks are tested against random boxes, folder concepts
    (whole images) against whole images."""
    if settings.tcav_runs == 0 or not data.tested or layer is None:
        return None
    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    evaluated = predictions["index"].to_numpy()
    nulls, passes = _nulls(
        model, dataset, preprocessing, evaluated, layer, settings, rng, bool(data.folders)
    )
    concepts, notes, sizes = _concept_cavs(
        model, dataset, data, preprocessing, evaluated, layer, nulls, settings, rng
    )
    rows, backward = _class_rows(
        model, dataset, preprocessing, predictions, (layer, kind), concepts, settings, rng
    )
    return ConceptTests(
        layer, tuple(rows), tuple(notes), sizes, min(settings.tcav_images, len(evaluated)),
        tuple(data.folders), settings, passes + sum(sizes.values()) + backward, backward,
        time.perf_counter() - started,
    )  # fmt: skip


def _folder_images(
    paths: tuple[Path, ...], preprocessing: Preprocessing, size: tuple[int, int],
    settings: ConceptSettings, rng: np.random.Generator,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """Up to ``tcav-images`` of a concept folder's images (a seeded draw), each resized to
    the model's input, and how many of those drawn could not be read."""
    chosen = sorted(rng.permutation(len(paths))[: settings.tcav_images].tolist())
    images, unreadable = [], 0
    for i in chosen:
        try:
            with open_image(paths[i], preprocessing.max_pixels) as opened:
                image = preprocessing.display(opened)
        except OSError:
            unreadable += 1
            continue
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
        images.append(image)
    return (torch.stack(images) if images else torch.empty(0)), unreadable


def _concept_regions(
    dataset: Dataset, data: ConceptData, k: int, evaluated: np.ndarray,
    preprocessing: Preprocessing, settings: ConceptSettings, rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Up to ``tcav-images`` images with a non-empty region of concept ``k`` (declared
    first, then computed) and those regions, ``(N, 1, H, W)``."""
    if k < len(data.declared):
        candidates = [int(i) for i in evaluated if data.paths[int(i)][k] is not None]
    else:
        candidates = [int(i) for i in evaluated]
    order = rng.permutation(candidates).tolist()
    images, regions = [], []
    for start in range(0, len(order), settings.tcav_images):
        read = _read(dataset, sorted(order[start : start + settings.tcav_images]),
                     preprocessing, settings.batch_size)  # fmt: skip
        if not read.indices:
            continue
        height, width = read.pixels.shape[-2:]
        size = (int(height), int(width))
        if k < len(data.declared):
            masks, annotated = declared_masks(
                dataset, data, torch.tensor(read.indices), preprocessing, size
            )
            found = masks[:, k] & annotated[:, k, None, None]
        else:
            found = computed_masks(read.pixels, (data.computed[k - len(data.declared)],))[:, 0]
        keep = found.flatten(1).any(1)
        images.append(read.pixels[keep])
        regions.append(found[keep, None].float())
        if sum(len(r) for r in regions) >= settings.tcav_images:
            break
    if not images:
        return torch.empty(0), torch.empty(0)
    limit = settings.tcav_images
    return torch.cat(images)[:limit], torch.cat(regions)[:limit]


def _concept_cavs(
    model: LoadedModel, dataset: Dataset, data: ConceptData, preprocessing: Preprocessing,
    evaluated: np.ndarray, layer: str, nulls: dict[str, _Null], settings: ConceptSettings,
    rng: np.random.Generator,
) -> tuple[dict[str, tuple[np.ndarray, _Null]], list[tuple[str, str]], dict[str, int]]:  # fmt: skip
    """Each concept's CAVs and its null, the notes on the concepts, the images of each."""
    concepts: dict[str, tuple[np.ndarray, _Null]] = {}
    notes: list[tuple[str, str]] = []
    sizes: dict[str, int] = {}
    for k, name in enumerate(data.tested):
        if k < len(data.names):
            images, regions = _concept_regions(
                dataset, data, k, evaluated, preprocessing, settings, rng
            )
            null, why = nulls["box"], "with a region of it"
        else:
            size = preprocessing.size or (0, 0)  # settled by the evaluation
            images, unreadable = _folder_images(data.folders[name], preprocessing, size,
                                                settings, rng)  # fmt: skip
            regions = torch.ones(len(images), 1, *size)
            null, why = nulls["whole"], "readable in its folder"
            if unreadable:
                notes.append((name, f"{unreadable} unreadable file(s) left out"))
        if len(images) < MIN_CONCEPT_IMAGES:
            notes.append((name, f"{len(images)} image(s) {why}, fewer than "
                                  f"{MIN_CONCEPT_IMAGES}: not tested"))  # fmt: skip
            continue
        acts = _activations(model, preprocessing, images, regions, layer, settings.batch_size)
        concepts[name] = (concept_vectors(acts, null.randoms, settings.seed), null)
        sizes[name] = len(images)
    return concepts, notes, sizes


def _class_rows(
    model: LoadedModel, dataset: Dataset, preprocessing: Preprocessing,
    predictions: pd.DataFrame, read: tuple[str, OutputKind],
    concepts: dict[str, tuple[np.ndarray, _Null]], settings: ConceptSettings,
    rng: np.random.Generator,
) -> tuple[list[TcavRow], int]:  # fmt: skip
    """Each class's rows (one per concept) and the backward passes they took; ``read`` is
    the layer and how the output gives each class's score."""
    layer, kind = read
    rows: list[TcavRow] = []
    backward = 0
    for target, name in enumerate(dataset.classes):
        mine = predictions.loc[predictions["label"].astype(str) == name, "index"].to_numpy()
        if not len(mine) or not concepts:
            continue
        chosen = sorted(rng.permutation(mine)[: settings.tcav_images].tolist())
        images = _read(dataset, chosen, preprocessing, settings.batch_size).pixels
        normalised = preprocessing.normalise(images).to(model.device)
        gradients = layer_gradients(
            model.tapped, normalised, layer, target, settings.batch_size, pool=True, kind=kind
        )
        backward += len(images)
        for concept, (cavs, null) in concepts.items():
            result = tcav(gradients, cavs, null.pseudo)
            low, high = np.percentile(result.scores, [2.5, 97.5])
            rows.append(TcavRow(
                name, concept, result.score, float(low), float(high), result.magnitude,
                result.p_value, result.significant(settings.tcav_alpha),
            ))  # fmt: skip
    return rows, backward
