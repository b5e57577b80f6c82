"""The model's embedding of each image, collected during the evaluation pass.

The embedding is the input of the classifier's last linear layer (found in the graph,
as the CAM head is: the pooled feature vector of a CNN, the class token of a vision
transformer), or the output of a declared ``embedding-layer``. It is tapped in the
same forward pass that scores the image (no second pass over the data set) and
streamed to a memory-mapped file, so memory does not grow with the number of images.

``embeddings.npy`` in the run folder: ``(N, D)``, row ``i`` is the image of row ``i`` of
``predictions.csv``; float32, or float16 when it would hold more than
:data:`FLOAT16_ABOVE` values.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from auditor.errors import ConfigError
from auditor.load import LoadedModel

__all__ = ["FLOAT16_ABOVE", "EmbeddingSite", "EmbeddingStore", "embedding_site"]

FLOAT16_ABOVE = 1 << 27
"""Values (images × dimensions) above which ``embeddings.npy`` is written in float16
(512 MiB of float32)."""

CHUNK = 4096
"""Rows read or written at a time."""


@dataclass(frozen=True)
class EmbeddingSite:
    """Where the embedding is tapped.

    Attributes:
        paths: The declared module's path, or ``()``.
        addresses: The head input's graph address, or ``()``.
        description: In words, for the report.
    """

    paths: tuple[str, ...]
    addresses: tuple[int, ...]
    description: str

    def reduce(self, tapped: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` float32: a 4-D output averaged over space, a ``(B, T, D)`` sequence's
        first token, a ``(B, D)`` vector as it is."""
        if tapped.dim() == 4:
            return tapped.float().mean(dim=(2, 3))
        if tapped.dim() == 3:
            return tapped[:, 0].float()
        return tapped.float().flatten(1)


def embedding_site(
    model: LoadedModel, layer: str | None, last_stage: str | None = None
) -> EmbeddingSite | None:
    """The declared ``layer``'s output; else the input of the last linear layer; else, when
    the model's output is not made by a linear layer (a fully convolutional classifier),
    the output of ``last_stage`` (the last spatial stage with more channels than classes:
    not the class maps) averaged over space; ``None`` when there is none of them.

    Raises:
        ConfigError: ``layer`` names no tappable module.
    """
    if layer is not None:
        try:
            model.tapped.site(layer)
        except KeyError as error:
            raise ConfigError(f"embedding-layer: {error.args[0]}") from None
        return EmbeddingSite((layer,), (), f"the output of {layer} (declared embedding-layer)")
    head, _ = model.tapped.head_input
    if head is not None:
        where = f" ({head.module})" if head.module else ""
        return EmbeddingSite((), (head.address,), f"the input of the last linear layer{where}")
    if last_stage is not None:
        return EmbeddingSite(
            (last_stage,), (), f"the output of {last_stage}, the last spatial stage before the "
            f"class maps, averaged over space (no linear layer makes the model's output)",
        )  # fmt: skip
    return None


class EmbeddingStore:
    """Embeddings streamed to a memory-mapped ``.npy`` in a temporary folder, one row per
    scored image in the order scored (the order of ``predictions.csv``)."""

    def __init__(self, capacity: int) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="auditor-embeddings-")
        self.capacity = capacity
        self.rows = 0
        self._array: np.memmap | None = None

    def add(self, vectors: torch.Tensor) -> None:
        """Append ``(B, D)`` vectors."""
        values = vectors.detach().float().cpu().numpy()
        if self._array is None:
            path = Path(self._folder.name) / "embeddings.npy"
            self._array = np.lib.format.open_memmap(
                path, "w+", np.float32, (self.capacity, values.shape[1])
            )
        self._array[self.rows : self.rows + len(values)] = values
        self.rows += len(values)

    @property
    def dimensions(self) -> int:
        return 0 if self._array is None else int(self._array.shape[1])

    def rows_at(self, rows: NDArray[np.int64] | slice) -> NDArray[np.float32]:
        """The embeddings of the given rows, as float32 in memory."""
        assert self._array is not None, "no embedding was stored"
        return np.asarray(self._array[: self.rows][rows], dtype=np.float32)

    def all(self) -> NDArray[np.float32]:
        """Every row, as a read-only memory-mapped view (not loaded)."""
        assert self._array is not None, "no embedding was stored"
        return self._array[: self.rows]

    def write(self, path: Path) -> None:
        """``embeddings.npy``: float32, or float16 above :data:`FLOAT16_ABOVE` values."""
        dtype = np.float16 if self.rows * self.dimensions > FLOAT16_ABOVE else np.float32
        out = np.lib.format.open_memmap(path, "w+", dtype, (self.rows, self.dimensions))
        for start in range(0, self.rows, CHUNK):
            out[start : start + CHUNK] = self.rows_at(slice(start, start + CHUNK))
        out.flush()
        del out
