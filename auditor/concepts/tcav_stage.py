"""The TCAV stage: does each class's score move along each concept, at one layer (see
:mod:`auditor.concepts.tcav`)?

A concept's activation is the layer's output averaged over the concept's region of an
image in which it is present: the declared mask, or the computed concept's pixels (a
folder concept's images are whole). The null is geometry-matched: the negatives and the
pseudo-concepts are random validation images seen through the concept's own regions, so
a CAV can only learn what the regions hold, not their size, shape or place (against
random boxes, small boxes drawn from random images were "significant" in 6 of 20 seeds
on the demo's model, and whole images in 8). The CAVs live in channel space
(``pool``), so the concept's position in the class images does not matter. Concepts,
classes and the pool of random images each draw from a seeded stream of their own.
Each image is run forward once per set it is in; each class's images once backward.
A multi-label model's classes are its labels: a label's images are those that have it
(Kim et al. test a class on its images), and its score is its own (its logit, or its
probability when the model outputs probabilities).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from auditor.concepts.data import ConceptData, computed_masks
from auditor.concepts.settings import ConceptSettings
from auditor.concepts.stage import declared_masks
from auditor.concepts.tcav import (
    concept_vectors,
    layer_activations,
    layer_gradients,
    one_direction,
    tcav,
)
from auditor.data import Dataset
from auditor.images import Preprocessing, make_loader, open_image
from auditor.load import LoadedModel, OutputKind
from auditor.multilabel.evaluation import label_matrix

__all__ = ["ConceptTests", "TcavRow", "concept_tests"]

MIN_CONCEPT_IMAGES = 5
"""Fewer images with a region of the concept than this and it is not tested."""

POOL = 4
"""Random validation images read for the nulls, per ``tcav-images``."""


@dataclass(frozen=True)
class TcavRow:
    """One class and concept: the TCAV score and magnitude over the runs, the random
    pseudo-concepts' mean score (``null_score``) and the p-value."""

    target: str
    concept: str
    score: float
    score_low: float
    score_high: float
    magnitude: float
    null_score: float
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
        one_direction: The classes whose images' gradients at the layer all point one
            way (:func:`~auditor.concepts.tcav.one_direction`): every direction scores 0
            or 1 for them, so TCAV cannot judge them there.
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
    one_direction: tuple[str, ...] = ()


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


def _stream(settings: ConceptSettings, purpose: str, name: str = "") -> np.random.Generator:
    """A seeded stream of its own for each purpose and concept or class, so that one row
    does not change when other concepts are declared."""
    return np.random.default_rng([settings.seed, zlib.crc32(f"{purpose}:{name}".encode())])


def _activations(model: LoadedModel, preprocessing: Preprocessing, images: torch.Tensor,
                 regions: torch.Tensor, layer: str, batch: int) -> np.ndarray:  # fmt: skip
    normalised = preprocessing.normalise(images).to(model.device)
    return layer_activations(model.tapped, normalised, layer, batch, regions)


@dataclass(frozen=True)
class _Null:
    """A concept's null at the layer: the runs' negatives (``randoms``) and the CAVs of
    the pseudo-concepts against them (``pseudo``); ``passes``: forward passes taken."""

    randoms: list[np.ndarray]
    pseudo: list[np.ndarray]
    passes: int


def _matched_null(
    model: LoadedModel, preprocessing: Preprocessing, pool: torch.Tensor, regions: torch.Tensor,
    layer: str, settings: ConceptSettings, rng: np.random.Generator,
) -> _Null:  # fmt: skip
    """Random images seen through the concept's own regions: each negative set is
    ``tcav-images`` pool images, each with one of the concept's regions drawn at random;
    each pseudo-concept puts every one of the concept's regions on a random pool image.
    The pseudo-concepts then have the concept's geometry exactly (sizes, shapes, places)
    and differ from it only in what the regions hold: under the null that the content
    does not matter they are exchangeable with the concept."""
    n = settings.tcav_images

    def seen(count: int, which: np.ndarray) -> np.ndarray:
        chosen = rng.choice(len(pool), count, replace=len(pool) < count)
        return _activations(model, preprocessing, pool[chosen], regions[which], layer,
                            settings.batch_size)  # fmt: skip

    randoms = [seen(n, rng.integers(len(regions), size=n)) for _ in range(settings.tcav_runs)]
    pseudo = [
        concept_vectors(seen(len(regions), np.arange(len(regions))), randoms, settings.seed)
        for _ in range(settings.tcav_pseudo)
    ]
    return _Null(randoms, pseudo, settings.tcav_runs * n + settings.tcav_pseudo * len(regions))


def concept_tests(
    model: LoadedModel, dataset: Dataset, data: ConceptData, preprocessing: Preprocessing,
    predictions: pd.DataFrame, layer: str | None, settings: ConceptSettings,
    kind: OutputKind = OutputKind.LOGITS,
) -> ConceptTests | None:  # fmt: skip
    """TCAV of every concept (declared, computed and from folders) for every class at
    ``layer``, or ``None`` when it is switched off (``tcav-runs`` 0), there is no concept
    or no layer. Each concept is tested against random validation images seen through its
    own regions (whole images for a folder concept): see :func:`_matched_null`."""
    if settings.tcav_runs == 0 or not data.tested or layer is None:
        return None
    started = time.perf_counter()
    evaluated = predictions["index"].to_numpy()
    size = min(len(evaluated), POOL * settings.tcav_images)
    drawn = _stream(settings, "pool").choice(evaluated, size, replace=False)
    pool = _read(dataset, sorted(drawn.tolist()), preprocessing, settings.batch_size).pixels
    concepts, notes, sizes, passes = _concept_cavs(
        model, dataset, data, preprocessing, (evaluated, pool), layer, settings
    )
    rows, backward, uniform = _class_rows(
        model, dataset, preprocessing, predictions, (layer, kind), concepts, settings
    )
    return ConceptTests(
        layer, tuple(rows), tuple(notes), sizes, min(settings.tcav_images, len(evaluated)),
        tuple(data.folders), settings, passes + backward, backward,
        time.perf_counter() - started, tuple(uniform),
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
    dataset: Dataset, data: ConceptData, name: str, evaluated: np.ndarray,
    preprocessing: Preprocessing, settings: ConceptSettings, rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Up to ``tcav-images`` images with a non-empty region of the declared or computed
    concept ``name``, and those regions, ``(N, 1, H, W)``."""
    declared = name in data.declared
    k = data.declared.index(name) if declared else -1
    if declared:
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
        if declared:
            masks, annotated = declared_masks(
                dataset, data, torch.tensor(read.indices), preprocessing, size
            )
            found = masks[:, k] & annotated[:, k, None, None]
        else:
            found = computed_masks(read.pixels, (name,))[:, 0]
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
    images: tuple[np.ndarray, torch.Tensor], layer: str, settings: ConceptSettings,
) -> tuple[
    dict[str, tuple[np.ndarray, _Null]], list[tuple[str, str]], dict[str, int], int
]:  # fmt: skip
    """Each concept's CAVs and its null, the notes on the concepts, the images of each and
    the forward passes; ``images``: the evaluated indices and the pool of random images."""
    evaluated, pool = images
    concepts: dict[str, tuple[np.ndarray, _Null]] = {}
    notes: list[tuple[str, str]] = []
    sizes: dict[str, int] = {}
    passes = 0
    for name in data.tested:
        rng = _stream(settings, "concept", name)
        if name not in data.folders:
            found, regions = _concept_regions(
                dataset, data, name, evaluated, preprocessing, settings, rng
            )
            why = "with a region of it"
        else:
            size = preprocessing.size or (0, 0)  # settled by the evaluation
            found, unreadable = _folder_images(data.folders[name], preprocessing, size,
                                               settings, rng)  # fmt: skip
            regions = torch.ones(len(found), 1, *size)
            why = "readable in its folder"
            if unreadable:
                notes.append((name, f"{unreadable} unreadable file(s) left out"))
        if len(found) < MIN_CONCEPT_IMAGES:
            notes.append((name, f"{len(found)} image(s) {why}, fewer than "
                                f"{MIN_CONCEPT_IMAGES}: not tested"))  # fmt: skip
            continue
        acts = _activations(model, preprocessing, found, regions, layer, settings.batch_size)
        null = _matched_null(model, preprocessing, pool, regions, layer, settings, rng)
        concepts[name] = (concept_vectors(acts, null.randoms, settings.seed), null)
        sizes[name] = len(found)
        passes += len(found) + null.passes
    return concepts, notes, sizes, passes


def _members(predictions: pd.DataFrame, dataset: Dataset) -> np.ndarray:
    """``(N, K)``: whether each evaluated image is of each class (has each label)."""
    cells = predictions["label"].astype(str)
    if dataset.multi_label:
        return label_matrix(cells, dataset.classes)
    return cells.to_numpy()[:, None] == np.array(dataset.classes, dtype=object)[None, :]


def _class_rows(
    model: LoadedModel, dataset: Dataset, preprocessing: Preprocessing,
    predictions: pd.DataFrame, read: tuple[str, OutputKind],
    concepts: dict[str, tuple[np.ndarray, _Null]], settings: ConceptSettings,
) -> tuple[list[TcavRow], int, list[str]]:  # fmt: skip
    """Each class's rows (one per concept), the backward passes they took and the classes
    whose gradients all point one way; ``read`` is the layer and how the output gives
    each class's score."""
    layer, kind = read
    rows: list[TcavRow] = []
    backward, uniform = 0, []
    members = _members(predictions, dataset)
    for target, name in enumerate(dataset.classes):
        mine = predictions["index"].to_numpy()[members[:, target]]
        if not len(mine) or not concepts:
            continue
        rng = _stream(settings, "class", name)
        chosen = sorted(rng.permutation(mine)[: settings.tcav_images].tolist())
        images = _read(dataset, chosen, preprocessing, settings.batch_size).pixels
        normalised = preprocessing.normalise(images).to(model.device)
        gradients = layer_gradients(
            model.tapped, normalised, layer, target, settings.batch_size, pool=True, kind=kind
        )
        backward += len(images)
        if one_direction(gradients):
            uniform.append(name)
        for concept, (cavs, null) in concepts.items():
            result = tcav(gradients, cavs, null.pseudo)
            low, high = np.percentile(result.scores, [2.5, 97.5])
            rows.append(TcavRow(
                name, concept, result.score, float(low), float(high), result.magnitude,
                float(result.null_scores.mean()), result.p_value,
                result.significant(settings.tcav_alpha),
            ))  # fmt: skip
    return rows, backward, uniform
