"""The dissection stage: one tapped forward pass per image, the activations kept on disk,
then each layer dissected from them (:func:`~auditor.concepts.dissection.dissect`).

Memory is bounded by one batch: each layer's activations and the concept masks go to
memory-mapped files in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from auditor.concepts.data import ConceptData, computed_masks
from auditor.concepts.dissection import Dissection, dissect, upsampled
from auditor.concepts.masks import Batch, packed_masks, unpacked
from auditor.concepts.settings import ConceptSettings
from auditor.data import Dataset
from auditor.explain.features import Stage
from auditor.images import Preprocessing, make_loader, open_image
from auditor.load import LoadedModel
from auditor.measure.localisation import read_mask

__all__ = [
    "LayerDissection",
    "NetworkDissection",
    "UnitExample",
    "declared_masks",
    "dissect_network",
]

TOP_IMAGES = 3
"""Images shown per labelled unit: those where it is most active."""

CHUNK = 64
"""Images per batch when reading the stored activations back."""

EXAMPLE_UNITS = 6
"""Units shown with their top images: those labelled with an artefact, then the best unit
of each declared concept."""


@dataclass(frozen=True)
class UnitExample:
    """A unit shown on its top images.

    Attributes:
        concept: Index of the concept it is shown with (its label).
        images: ``(n, H, W, C)`` float in [0, 1], the images where it is most active.
        unit_masks: ``(n, H, W)`` bool, where it reaches its threshold.
        concept_masks: ``(n, H, W)`` bool, the concept's masks.
    """

    layer: str
    unit: int
    concept: int
    iou: float
    indices: tuple[int, ...]
    images: np.ndarray
    unit_masks: np.ndarray
    concept_masks: np.ndarray


@dataclass(frozen=True)
class LayerDissection:
    """One layer's units against every concept.

    Attributes:
        labels: ``(C,)`` each unit's concept index, or -1 when unlabelled.
        top_images: ``(C, TOP_IMAGES)`` sample indices where each unit is most active.
    """

    path: str
    shape: tuple[int, int, int]
    dissection: Dissection
    labels: np.ndarray
    top_images: np.ndarray


@dataclass(frozen=True)
class NetworkDissection:
    """Every dissected layer, the concepts and what it cost.

    Attributes:
        concepts: The concepts' names (declared, then computed).
        indices: The dissected sample indices, in order.
        annotated: ``(K,)`` images annotated with each concept.
        present: ``(K,)`` images in which each concept is present.
        unreadable: Images (or their concept masks) that could not be read.
        passes: Forward passes (one per image).
        seconds: The whole stage's wall time.
        forward_seconds: Of which reading the images and masks, the forward passes
            and storing the activations; the rest is the thresholds and the tally.
    """

    layers: tuple[LayerDissection, ...]
    examples: tuple[UnitExample, ...]
    data: ConceptData
    indices: tuple[int, ...]
    annotated: np.ndarray
    present: np.ndarray
    unreadable: int
    passes: int
    seconds: float
    forward_seconds: float
    size: tuple[int, int]
    settings: ConceptSettings

    @property
    def concepts(self) -> tuple[str, ...]:
        return self.data.names


def _chosen(predictions: pd.DataFrame, limit: int, seed: int) -> list[int]:
    indices = predictions["index"].to_numpy()
    if len(indices) > limit:
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    return [int(i) for i in indices]


def declared_masks(
    dataset: Dataset, data: ConceptData, indices: torch.Tensor, preprocessing: Preprocessing,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(B, K, H, W)`` masks of the declared concepts and ``(B, K)`` whether each was read."""
    masks = torch.zeros(len(indices), len(data.declared), *size, dtype=torch.bool)
    annotated = torch.ones(len(indices), len(data.declared), dtype=torch.bool)
    for row, index in enumerate(indices.tolist()):
        original: tuple[int, int] | None = None
        for k, path in enumerate(data.paths[index]):
            if path is None:
                continue
            try:
                if original is None:
                    with open_image(dataset.samples[index].path, preprocessing.max_pixels) as image:
                        original = image.size
                mask = read_mask(path, original, preprocessing)
            except OSError:
                annotated[row, k] = False
                continue
            if tuple(mask.shape) != size:
                annotated[row, k] = False
            else:
                masks[row, k] = mask
    return masks, annotated


class _Store:
    """Memory-mapped arrays in a temporary folder: each layer's activations, the masks'
    bits (:func:`~auditor.concepts.masks.packed_masks`, where the images are annotated);
    in memory, each image's concept areas and annotations."""

    def __init__(self, folder: Path, n: int, shapes: list[tuple[int, int, int]],
                 concepts: int, size: tuple[int, int]) -> None:  # fmt: skip
        self.layers = [
            np.lib.format.open_memmap(folder / f"layer{i}.npy", "w+", np.float32, (n, *shape))
            for i, shape in enumerate(shapes)
        ]
        self.bits = np.lib.format.open_memmap(
            folder / "bits.npy", "w+", np.uint8, (n, *size, -(-concepts // 8))
        )
        self.areas = np.zeros((n, concepts))
        self.annotated = np.zeros((n, concepts), dtype=bool)
        self.indices = np.zeros(n, dtype=np.int64)
        self.filled = 0

    def add(self, activations: list[torch.Tensor], masks: torch.Tensor, annotated: torch.Tensor,
            indices: torch.Tensor) -> None:  # fmt: skip
        rows = slice(self.filled, self.filled + len(indices))
        for array, tensor in zip(self.layers, activations, strict=True):
            array[rows] = tensor.detach().float().cpu().numpy()
        bits, areas = packed_masks(masks, annotated)
        self.bits[rows], self.areas[rows] = bits.numpy(), areas.numpy()
        self.annotated[rows] = annotated.numpy()
        self.indices[rows] = indices.numpy()
        self.filled += len(indices)

    def batches(self, layer: int) -> Iterator[Batch]:
        for start in range(0, self.filled, CHUNK):
            rows = slice(start, min(start + CHUNK, self.filled))
            yield Batch(
                torch.from_numpy(np.asarray(self.layers[layer][rows])),
                torch.from_numpy(np.asarray(self.bits[rows])),
                torch.from_numpy(self.areas[rows]),
                torch.from_numpy(self.annotated[rows]),
            )

    def top_images(self, layer: int) -> np.ndarray:
        """``(C, TOP_IMAGES)`` sample indices of each unit's largest activations."""
        peaks = np.concatenate(
            [np.asarray(self.layers[layer][s : s + CHUNK]).max(axis=(2, 3))
             for s in range(0, self.filled, CHUNK)]
        )  # fmt: skip
        order = np.argsort(-peaks, axis=0, kind="stable")[:TOP_IMAGES].T
        return self.indices[: self.filled][order]


def _shown(layers: list[LayerDissection], data: ConceptData) -> list[tuple[int, int, int]]:
    """``(layer, unit, concept)`` of the units to show (:data:`EXAMPLE_UNITS`)."""
    labelled = [
        (float(layer.dissection.iou[unit, k]), i, unit, k)
        for i, layer in enumerate(layers)
        for unit, k in enumerate(layer.labels.tolist())
        if k >= 0
    ]
    names = data.names
    artifacts = sorted((t for t in labelled if names[t[3]] in data.artifacts), reverse=True)
    best: dict[int, tuple[float, int, int, int]] = {}
    for entry in sorted(labelled, reverse=True):
        if names[entry[3]] in data.declared and names[entry[3]] not in data.artifacts:
            best.setdefault(entry[3], entry)
    chosen = (artifacts[:3] + list(best.values()))[:EXAMPLE_UNITS]
    return [(i, unit, k) for _, i, unit, k in chosen]


def _examples(
    store: _Store, layers: list[LayerDissection], dataset: Dataset, data: ConceptData,
    preprocessing: Preprocessing, size: tuple[int, int],
) -> tuple[UnitExample, ...]:  # fmt: skip
    """The shown units on their top images: the images read again, the masks from the store."""
    display = replace(preprocessing, mean=None, std=None)
    examples = []
    for i, unit, k in _shown(layers, data):
        layer = layers[i]
        indices = tuple(int(x) for x in layer.top_images[unit])
        rows = [int(np.flatnonzero(store.indices[: store.filled] == x)[0]) for x in indices]
        batch = next(iter(make_loader([dataset.samples[x] for x in indices], display, len(rows))))
        if len(batch.failures):
            continue
        activations = torch.from_numpy(np.asarray(store.layers[i][rows])[:, unit : unit + 1])
        threshold = float(layer.dissection.thresholds.values[unit])
        fires = upsampled(activations, size)[:, 0] >= threshold
        examples.append(UnitExample(
            layer.path, unit, k, float(layer.dissection.iou[unit, k]), indices,
            batch.images.permute(0, 2, 3, 1).numpy(), fires.view(-1, *size).numpy(),
            unpacked(np.asarray(store.bits[rows]), k),
        ))  # fmt: skip
    return tuple(examples)


def _forward(
    model: LoadedModel, dataset: Dataset, data: ConceptData, preprocessing: Preprocessing,
    indices: list[int], layers: tuple[Stage, ...], store: _Store, settings: ConceptSettings,
) -> int:  # fmt: skip
    """One tapped forward pass per image into ``store``; the images that could not be read."""
    display = replace(preprocessing, mean=None, std=None)
    loader = make_loader(
        [dataset.samples[i] for i in indices], display, settings.batch_size, settings.workers
    )
    size = store.bits.shape[1:3]
    unreadable = 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc="dissection", unit="batch", leave=False, disable=None):
            unreadable += len(batch.failures)
            if not batch.images.numel():
                continue
            inputs = preprocessing.normalise(batch.images).to(model.device)
            _, taps = model.tapped(inputs, [layer.path for layer in layers])
            declared, annotated = declared_masks(
                dataset, data, batch.indices, preprocessing, tuple(size)
            )
            computed = computed_masks(batch.images, data.computed)
            masks = torch.cat([declared, computed], dim=1)
            every = torch.cat([annotated, torch.ones_like(computed[:, :, 0, 0])], dim=1)
            store.add(taps, masks, every, batch.indices)
    return unreadable


def dissect_network(
    model: LoadedModel, dataset: Dataset, data: ConceptData, preprocessing: Preprocessing,
    predictions: pd.DataFrame, layers: tuple[Stage, ...], settings: ConceptSettings,
) -> NetworkDissection | None:  # fmt: skip
    """Dissect ``layers`` on the evaluated images, or ``None`` when switched off (no
    image, layer or concept)."""
    if settings.dissection_images == 0 or not layers or not data.names:
        return None
    started = time.perf_counter()
    indices = _chosen(predictions, settings.dissection_images, settings.seed)
    size = preprocessing.size
    assert size is not None, "settled by model_preprocessing"
    with tempfile.TemporaryDirectory(prefix="auditor-dissection-") as folder:
        store = _Store(Path(folder), len(indices), [layer.shape for layer in layers],
                       len(data.names), size)  # fmt: skip
        unreadable = _forward(model, dataset, data, preprocessing, indices, layers, store, settings)
        forward_seconds = time.perf_counter() - started
        if store.filled == 0:
            return None
        results = []
        for i, layer in enumerate(layers):
            dissection = dissect(partial(store.batches, i), size, settings.dissection_quantile)
            results.append(LayerDissection(
                layer.path, layer.shape, dissection,
                dissection.labels(settings.dissection_iou), store.top_images(i),
            ))  # fmt: skip
        examples = _examples(store, results, dataset, data, preprocessing, size)
        annotated = store.annotated[: store.filled]
        present = store.areas[: store.filled] > 0
    return NetworkDissection(
        tuple(results), examples, data, tuple(int(i) for i in store.indices[: store.filled]),
        annotated.sum(axis=0), (present & annotated).sum(axis=0), unreadable, store.filled,
        time.perf_counter() - started, forward_seconds, size, settings,
    )  # fmt: skip
