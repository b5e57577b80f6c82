"""Sharded audits on torch.distributed: ``torchrun --nproc-per-node N -m auditor run …``.

Every rank loads the model and the data, then shares the stages that run the model over
many images or cases: the evaluation (in chunks of whole batches), the explanations (in
batches of cases) and the trust checks (faithfulness by case, randomisation by cascade
step, stability by batch of noisy copies). Each of those is a sequence of *units*; rank
``r`` of ``N`` computes the units ``i`` with ``i % N == r``, and every rank then receives
every unit's result, in unit order (:func:`sharded`). A unit is computed exactly as a
single process computes it (the same batches, the same seeds) and the results are merged
in the same order, so a sharded run's files equal a single process's.

Rank 0 alone runs the other stages (robustness, concepts, clinical analysis, similarity,
counterfactuals) and writes the run folder; the other ranks stop after the trust checks,
and on the CPU rank 0 then takes over their threads (:func:`take_over_threads`).
The backend is ``gloo`` on the CPU and ``nccl`` on CUDA, where rank ``r`` uses the GPU
``LOCAL_RANK``. torchrun's rendezvous flags (``--nnodes``, ``--rdzv-endpoint``) work as
usual; a multi-node run needs ``--out`` on a file system every node sees.

Outside torchrun (no ``WORLD_SIZE`` above 1 in the environment) the world is one process
and :func:`sharded` is a plain loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from threadpoolctl import threadpool_limits

from auditor import errors
from auditor.errors import ConfigError

__all__ = [
    "World",
    "join_world",
    "leave_world",
    "one_process",
    "sharded",
    "share",
    "sharing",
    "take_over_threads",
    "world",
]

T = TypeVar("T")
R = TypeVar("R")

WAIT = timedelta(hours=12)
"""How long a rank waits for the others at a gather. Rank 0 runs the unsharded stages
between the sharded ones (robustness and concepts come between the evaluation and the
explanations) while the others wait, so this is long; a rank that dies is noticed by
torchrun, which stops the others, not by this timeout."""


@dataclass(frozen=True)
class World:
    """The processes of one audit.

    Attributes:
        rank: This process's number, 0 to ``size - 1``.
        size: How many processes share the audit (1: not sharded).
        backend: ``gloo`` or ``nccl`` (``""`` for one process).
        threads: Each rank's torch threads when it joined.
    """

    rank: int = 0
    size: int = 1
    backend: str = ""
    threads: int = 1

    @property
    def leader(self) -> bool:
        """Whether this process writes the run folder (rank 0)."""
        return self.rank == 0

    def describe(self) -> str:
        """The world in words, for the report (``""`` for one process)."""
        if self.size == 1:
            return ""
        each = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"{self.size} processes ({self.backend}) of {each} each"


_WORLD = World()
_ALONE = [False]  # inside a unit: nested sharded() calls run every unit locally


def world() -> World:
    """The world this process belongs to."""
    return _WORLD


def sharing() -> int:
    """How many ranks a :func:`sharded` call made here shares its units among: the
    world's size, or 1 inside a unit."""
    return 1 if _ALONE[0] else _WORLD.size


def _environment_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']!r}, not a number; start sharded runs "
            f"with torchrun, which sets it"
        ) from None


def one_process(command: str) -> None:
    """Refuse to run ``command`` under torchrun.

    Raises:
        ConfigError: ``WORLD_SIZE`` is above 1.
    """
    if _environment_size() > 1:
        raise ConfigError(
            f"{command} runs in one process; start it without torchrun (torchrun shares "
            f"the work of auditor run)"
        )


def join_world(device: str) -> World:
    """Join torchrun's process group when there is one (``WORLD_SIZE`` above 1): ``nccl``
    for a CUDA ``device`` (each rank on the GPU ``LOCAL_RANK``), else ``gloo``.

    Raises:
        ConfigError: ``WORLD_SIZE`` is set without the rest of torchrun's environment,
            one GPU is named (``cuda:N``: every rank would share it), or CUDA is asked
            for with fewer GPUs than local ranks.
    """
    global _WORLD
    size = _environment_size()
    if size <= 1:
        _WORLD = World()
        return _WORLD
    missing = [
        k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is {size} but {missing[0]} is not set; start sharded runs with "
            f"torchrun --nproc-per-node N -m auditor run …"
        )
    if device.startswith("cuda:"):
        raise ConfigError(
            f"--device {device} names one GPU, but a sharded run puts each process on the GPU "
            f"of its local rank; pass --device cuda (CUDA_VISIBLE_DEVICES chooses the GPUs)"
        )
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                f"pass --nproc-per-node at most that, or --device cpu"
            )
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=WAIT)
    _WORLD = World(dist.get_rank(), dist.get_world_size(), backend, torch.get_num_threads())
    return _WORLD


def leave_world() -> None:
    """Leave the process group (a no-op for one process), with the threads it joined with."""
    global _WORLD
    if _WORLD.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
    if _THREADS:
        threads, limits = _THREADS.pop()
        torch.set_num_threads(threads)
        limits.restore_original_limits()
    _WORLD = World()


_THREADS: list[tuple[int, threadpool_limits]] = []  # rank 0's before it took the others'


def take_over_threads() -> None:
    """On rank 0 of a sharded CPU run, once the other ranks have stopped: use their
    threads too (torchrun gives each rank ``cores / N``), torch's and the native
    libraries' (BLAS, OpenMP: scikit-learn's t-SNE and PCA), for the stages rank 0 runs
    alone after the shared ones."""
    if _WORLD.size == 1 or not _WORLD.leader or _WORLD.backend != "gloo" or _THREADS:
        return
    threads = torch.get_num_threads() * max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    _THREADS.append((torch.get_num_threads(), threadpool_limits(limits=threads)))
    torch.set_num_threads(threads)


@contextlib.contextmanager
def _alone() -> Iterator[None]:
    before = _ALONE[0]
    _ALONE[0] = True
    try:
        yield
    finally:
        _ALONE[0] = before


@dataclass(frozen=True)
class _Failed:
    """A unit that raised: the error's class name and message, re-raised on every rank
    (an :class:`~auditor.errors.AuditError` as itself, anything else as a RuntimeError)."""

    kind: str
    text: str


def _raise(failed: _Failed) -> None:
    mistakes = {kind.__name__: kind for kind in _subclasses(errors.AuditError)}
    if failed.kind in mistakes:
        raise mistakes[failed.kind](failed.text)
    raise RuntimeError(f"a rank of this sharded run failed: {failed.kind}: {failed.text}")


def _subclasses(kind: type[errors.AuditError]) -> list[type[errors.AuditError]]:
    return [kind, *(k for sub in kind.__subclasses__() for k in _subclasses(sub))]


def sharded(units: Iterable[T], compute: Callable[[T], R]) -> list[R]:
    """``[compute(unit) for unit in units]``, the units shared among the ranks.

    Every rank iterates over every unit (a generator that mutates what it yields, like
    the randomisation cascade, stays in step) and computes those it owns; every rank
    returns every result, in unit order. A unit that raises raises on every rank. Calls
    made inside a unit are not shared again.
    """
    if sharing() == 1:
        return [compute(unit) for unit in units]
    mine: dict[int, Any] = {}
    count = 0
    with _alone():
        for number, unit in enumerate(units):
            count += 1
            if number % _WORLD.size != _WORLD.rank or any(
                isinstance(v, _Failed) for v in mine.values()
            ):
                continue
            try:
                mine[number] = compute(unit)
            except Exception as error:
                mine[number] = _Failed(error.__class__.__name__, str(error))
    parts: list[dict[int, Any] | None] = [None] * _WORLD.size
    dist.all_gather_object(parts, mine)
    merged: dict[int, Any] = {}
    for part in parts:
        merged.update(part or {})
    failures = [v for _, v in sorted(merged.items()) if isinstance(v, _Failed)]
    if failures:
        _raise(failures[0])
    return [merged[number] for number in range(count)]


def share(value: T) -> T:
    """Rank 0's ``value``, on every rank (``value`` itself for one process)."""
    if _WORLD.size == 1:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
