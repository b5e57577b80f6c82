"""Explanations in batches: every method on one batch, at sizes measured per device and
halved when memory runs out.

:func:`attribute_batch` runs the methods on one batch, sharing the gradient passes;
:func:`batches_halving_on_oom` walks a list of items in batches that halve when the
device runs out of memory. The explain stage and the trust checks' recomputed maps both
run through them.

The cost of a perturbation method is its number of passes times the cost of one pass
at the batch size it runs at, and that cost per image is not flat: on 2 CPU cores
resnet18 at 224 px costs 20.5 ms per image at batch 16 but 30.5 ms at batch 100. So
Auditor times a forward (or forward+backward) pass at a few batch sizes on the real
input and keeps the cheapest per image, instead of guessing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np
import torch

from auditor.distributed import sharded, sharing
from auditor.explain.base import Batch, ExplainContext, Method
from auditor.load import MODEL_ERRORS, first_line

__all__ = [
    "CANDIDATE_BATCHES",
    "Span",
    "attribute_batch",
    "batches_halving_on_oom",
    "halving_on_oom",
    "is_oom",
    "measure_batch_size",
    "measure_batches",
    "set_pass_batches",
    "shared_batches",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

CANDIDATE_BATCHES = (8, 16, 32, 64, 128)
METHOD_ERRORS: tuple[type[BaseException], ...] = (*MODEL_ERRORS, ValueError)
"""What a failing method raises on a batch: its rows say so, the run goes on."""


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


@dataclass(frozen=True)
class Span(Generic[T]):
    """One batch of items that ran, or the item that did not fit even alone.

    Attributes:
        start: First item of the batch.
        stop: One past its last item.
        result: What the work returned for ``items[start:stop]``, or ``None`` when even
            the one item ``start`` ran out of memory.
        error: That out-of-memory error's first line ("" when ``result`` is set).
        tried: The batch size this span started at.
        size: The batch size that worked (1 after an item that never fits), the size
            the next span starts at.
    """

    start: int
    stop: int
    result: T | None
    error: str
    tried: int
    size: int

    @property
    def halved(self) -> bool:
        """Whether the batch ran out of memory and worked at a smaller size."""
        return self.result is not None and self.size < self.tried


def batches_halving_on_oom(
    run: Callable[[int, int], T], n: int, size: int, what: str
) -> Iterator[Span[T]]:
    """Call ``run(start, stop)`` over items ``0 .. n - 1`` in batches of ``size``, in order.

    A batch that runs out of memory is retried at half the size, and later batches keep
    the smaller size; an item that does not fit even alone is reported (``result`` is
    ``None``) and the walk goes on at size 1.

    Args:
        run: Does the work on ``items[start:stop]``.
        n: The number of items.
        size: The first batch size to try (at least 1 is used).
        what: Names the work in the log message.

    Yields:
        One :class:`Span` per batch, covering the items in order.

    Raises:
        RuntimeError: ``run`` failed for another reason than memory.
    """
    start, size = 0, max(1, size)
    while start < n:

        def attempt(k: int, first: int = start) -> T:
            return run(first, min(first + k, n))

        tried = size
        result: T | None
        try:
            result, size = halving_on_oom(attempt, size, what)
            error = ""
        except RuntimeError as failure:  # even one item does not fit
            if not is_oom(failure):
                raise
            result, error, size = None, first_line(failure), 1
        stop = min(start + size, n)
        yield Span(start, stop, result, error, tried, size)
        start = stop


def shared_batches(run: Callable[[int, int], T], n: int, size: int, what: str) -> Iterator[Span[T]]:
    """:func:`batches_halving_on_oom`, its batches shared among the ranks of a sharded run
    (:func:`auditor.distributed.sharded`): each rank walks the batches it owns, halving
    one that runs out of memory, and every rank yields every span in order.

    One process walks batches of ``size``. Among ``R`` ranks a batch holds at most
    ``n / R`` items (rounded up), so that a single batch's worth of work is split too;
    the per-item results are then computed in smaller batches than one process's, which
    may move the last digits (see the README's Determinism section).
    """
    ranks = sharing()
    size = max(1, min(size, -(-n // ranks)) if ranks > 1 else size)
    walking = [size]  # a rank's size after its last halving: where its next batch starts

    def walk(first: int) -> list[Span[T]]:
        def within(start: int, stop: int) -> T:
            return run(first + start, first + stop)

        last = min(first + size, n)
        spans = [
            replace(span, start=span.start + first, stop=span.stop + first)
            for span in batches_halving_on_oom(within, last - first, walking[0], what)
        ]
        walking[0] = spans[-1].size
        return spans

    for spans in sharded(range(0, n, size), walk):
        yield from spans


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


def set_pass_batches(
    context: ExplainContext, methods: list[Method], example: torch.Tensor, size: int, how: str
) -> None:
    """Set the perturbation passes' batch sizes: ``size``, or timed when ``how`` is
    ``"measured"`` (setting ``pass-batches``).

    A fixed size makes every run group the same passes, so it sums the same terms in the
    same order: timing may pick another size on a loaded machine, and the maps then
    differ in their last digits.
    """
    if how == "measured":
        measure_batches(context, methods, example)
    else:
        context.forward_batch = context.backward_batch = size


def _shared_passes(
    context: ExplainContext,
    methods: list[Method],
    batch: Batch,
    results: dict[str, np.ndarray | str],
    clock: dict[str, float],
) -> None:
    """Compute ``batch.passes`` if a method reads them; on failure, fail those methods."""
    if not any(m.needs_passes for m in methods):
        return
    start = time.perf_counter()
    try:
        batch.passes = context.passes(batch.inputs, batch.targets)
        if batch.passes.activations.numel():
            context.layer_channels = int(batch.passes.activations.shape[1])
    except METHOD_ERRORS as error:
        if is_oom(error):
            raise
        log.warning("gradient passes failed: %s", error)
        results.update({m.key: first_line(error) for m in methods if m.needs_passes})
    clock["gradient passes"] = clock.get("gradient passes", 0.0) + (time.perf_counter() - start)


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
    _shared_passes(context, methods, batch, results, clock)
    for method in methods:
        if method.key in results:
            continue
        start = time.perf_counter()
        try:
            results[method.key] = method.attribute(batch, context).cpu().numpy()
        except METHOD_ERRORS as error:
            if is_oom(error):
                raise
            log.warning("%s failed on a batch: %s", method.key, error)
            results[method.key] = first_line(error)
        clock[method.key] = clock.get(method.key, 0.0) + time.perf_counter() - start
    return results
