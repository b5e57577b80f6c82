"""Recompute maps for the trust checks: a randomised model, noisy inputs.

The checks call the explain stage's :func:`~auditor.explain.engine.attribute_batch`
on other models or inputs, in batches that halve when the device runs out of memory.
"""

from __future__ import annotations

import numpy as np
import torch

from auditor.explain import ExplainContext, Method
from auditor.explain.batching import halving_on_oom, is_oom
from auditor.explain.engine import attribute_batch
from auditor.load import first_line

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
) -> dict[str, list[MapOrError]]:
    """Every method's map for each image, ``batch_size`` images at a time.

    Args:
        context: The model as the methods see it.
        methods: Methods to run.
        display: ``(N, C, H, W)`` images in [0, 1] on the CPU.
        targets: ``(N,)`` class indices.
        seeds: One seed per image (the explain stage's, so that sampling methods draw
            the same perturbations and only the model or the input differs).
        batch_size: Images per batch to try first.

    Returns:
        Key → one map or error per image.
    """
    results: dict[str, list[MapOrError]] = {m.key: [] for m in methods}
    done, size = 0, max(1, batch_size)
    while done < len(display):

        def attempt(n: int, start: int = done) -> dict[str, np.ndarray | str]:
            end = start + n
            return attribute_batch(
                context, methods, display[start:end], targets[start:end], seeds[start:end]
            )

        try:
            batch, size = halving_on_oom(attempt, size, "trust batch")
        except RuntimeError as error:
            if not is_oom(error):
                raise
            batch, size = {m.key: first_line(error) for m in methods}, 1
        n = min(size, len(display) - done)
        for key, value in batch.items():
            results[key].extend([value] * n if isinstance(value, str) else list(value))
        done += n
    return results
