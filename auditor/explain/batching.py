"""Batch sizes for explanation passes: measured per device, halved when memory runs out.

The cost of a perturbation method is its number of passes times the cost of one pass
at the batch size it runs at, and that cost per image is not flat: on 2 CPU cores
resnet18 at 224 px costs 20.5 ms per image at batch 16 but 30.5 ms at batch 100. So
Auditor times a forward (or forward+backward) pass at a few batch sizes on the real
input and keeps the cheapest per image, instead of guessing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["CANDIDATE_BATCHES", "halving_on_oom", "is_oom", "measure_batch_size"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CANDIDATE_BATCHES = (8, 16, 32, 64, 128)


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` means the device ran out of memory (CUDA or CPU allocator)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def halving_on_oom(run: Callable[[int], T], size: int, what: str) -> tuple[T, int]:
    """Call ``run(size)``; while it runs out of memory, retry with half the size.

    Args:
        run: Does the work at a given batch size.
        size: The first batch size to try (at least 1).
        what: Names the work in the log message.

    Returns:
        The result and the batch size that worked.

    Raises:
        torch.OutOfMemoryError: Even a batch of one does not fit.
    """
    while True:
        try:
            return run(size), size
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error) or size == 1:
                raise
            _release_memory()
            log.warning("%s ran out of memory at batch %d; retrying at %d", what, size, size // 2)
            size //= 2


def measure_batch_size(
    step: Callable[[torch.Tensor], object],
    example: torch.Tensor,
    candidates: tuple[int, ...] = CANDIDATE_BATCHES,
    limit: int | None = None,
) -> int:
    """The candidate batch size with the lowest time per image for ``step``.

    Args:
        step: One pass over a ``(N, C, H, W)`` batch (forward, or forward+backward).
        example: One ``(C, H, W)`` input, repeated to build each batch.
        candidates: Sizes to try, ascending; sizes above ``limit`` are skipped.
        limit: The most images the work will ever need in one batch.

    Each size is run once to warm up and then timed twice (the faster run counts, which
    discounts interruptions on a shared machine); sizes stop growing once a size is more
    than 10% slower per image than the best so far, or runs out of memory.
    """
    sizes = [s for s in candidates if limit is None or s <= limit] or [max(1, limit or 1)]
    best, best_cost = sizes[0], float("inf")
    synchronize = torch.cuda.synchronize if example.is_cuda else (lambda: None)
    for size in sizes:
        batch = example.unsqueeze(0).expand(size, *example.shape).contiguous()
        try:
            step(batch)
            synchronize()
            timings = []
            for _ in range(2):
                start = time.perf_counter()
                step(batch)
                synchronize()
                timings.append(time.perf_counter() - start)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error):
                raise
            _release_memory()
            break
        cost = min(timings) / size
        if cost < best_cost:
            best, best_cost = size, cost
        elif cost > 1.1 * best_cost:
            break
    log.info("measured batch size %d (%.2f ms per image)", best, best_cost * 1e3)
    return best
