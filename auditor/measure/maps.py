"""Recompute maps for the trust checks: a randomised model, noisy inputs.

The checks call the explain stage's :func:`~auditor.explain.batching.attribute_batch`
on other models or inputs, in batches that halve when the device runs out of memory.
"""

from __future__ import annotations

import numpy as np
import torch

from auditor.checkpoint import Memo
from auditor.explain import ExplainContext, Method
from auditor.explain.batching import attribute_batch, shared_batches

__all__ = ["MapOrError", "recompute"]

MapOrError = np.ndarray | str
"""An ``(H, W)`` float32 map, or the first line of the error that stopped it."""


def recompute(
    context: ExplainContext,
    methods: list[Method],
    display: torch.Tensor,
    targets: torch.Tensor,
    seeds: list[int],
    batch_size: int,
    memo: Memo | None = None,
    name: str = "",
) -> dict[str, list[MapOrError]]:
    """Every method's map for each image, ``batch_size`` images at a time (the batches
    shared among the ranks of a sharded run).

    Args:
        context: The model as the methods see it.
        methods: Methods to run.
        display: ``(N, C, H, W)`` images in [0, 1] on the CPU.
        targets: ``(N,)`` class indices.
        seeds: One seed per image (the explain stage's, so that sampling methods draw
            the same perturbations and only the model or the input differs).
        batch_size: Images per batch to try first.
        memo: Saves each batch's maps as ``<name>-<start>-<stop>`` when it finishes
            (and reads them back when a resumed run finds them).
        name: The batches' name in ``memo``; unique within a run.

    Returns:
        Key → one map or error per image.
    """

    def run(start: int, stop: int) -> dict[str, np.ndarray | str]:
        def attributed() -> dict[str, np.ndarray | str]:
            return attribute_batch(
                context, methods, display[start:stop], targets[start:stop], seeds[start:stop]
            )

        return attributed() if memo is None else memo(f"{name}-{start:06d}-{stop:06d}", attributed)

    if memo is not None and not name:
        raise ValueError("recompute: a memo needs the name its batches are saved under")
    results: dict[str, list[MapOrError]] = {m.key: [] for m in methods}
    for span in shared_batches(run, len(display), batch_size, "trust batch"):
        failed = {m.key: span.error for m in methods}
        batch = span.result if span.result is not None else failed
        n = span.stop - span.start
        for key, value in batch.items():
            results[key].extend([value] * n if isinstance(value, str) else list(value))
    return results
