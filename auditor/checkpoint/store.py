"""Resumable runs: each stage's result is saved in the hidden ``.partial`` run folder as it
finishes, so that a run killed by a scheduler's time limit (or ``kill -9``) continues
where it stopped.

The partial folder holds ``checkpoint/``: ``run.json`` (what makes this run this audit:
the configuration's, the model's and the data listing's hashes, and when it started) and
one folder per finished stage or part of one (an evaluation chunk, an explanation batch, a
trust check's case or batch of recomputed maps), each written under a temporary name
and renamed when complete, so a half-written result is never read. Rerunning the same
command finds the partial folder by that identity (``--resume FOLDER`` names it), reads
what is finished and computes the rest; the run then writes its files into the same
folder, drops ``checkpoint/`` and renames the folder into place. A folder with the final
name is only ever complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from auditor import __version__
from auditor.checkpoint.codec import CheckpointError, read_value, write_value
from auditor.data import Dataset
from auditor.distributed import world
from auditor.errors import AuditError, ConfigError, OutputError
from auditor.events import emit
from auditor.runfolder import run_folder

__all__ = [
    "NO_CHECKPOINT",
    "Checkpoint",
    "Memo",
    "Terminated",
    "open_checkpoint",
    "run_identity",
    "terminated_as_exit",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
FOLDER = "checkpoint"


class Memo(Protocol):
    """Saves a part of a stage under a name as it finishes, or reads it back when a
    resumed run finds it saved: :meth:`Checkpoint.part`, as the stages that save their
    parts as they go (evaluation chunks, explanation batches, trust cases) receive it."""

    def __call__(self, name: str, compute: Callable[[], T], /) -> T: ...


def run_identity(config_sha: str, model_sha: str, dataset: Dataset) -> str:
    """What a partial folder must match to be resumed: the configuration's SHA-256 (see
    :func:`auditor.history.identity.config_sha256`), the model file's, and the data
    listing's (each image's path, label, metadata, size and modification time: cheap to
    read, and an image rewritten since the kill would not match)."""
    digest = hashlib.sha256(f"{config_sha}\n{model_sha}\n".encode())
    for sample in dataset.samples:
        try:
            stat = sample.path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        entry = (sample.relpath, sample.label, sample.metadata, size, mtime)
        digest.update(json.dumps(entry, default=str).encode() + b"\n")
    for excluded in dataset.excluded:
        digest.update(json.dumps((excluded.relpath, excluded.reason)).encode() + b"\n")
    return digest.hexdigest()


def _kind(part: str) -> str:
    """A part's kind: its name's first two words before the numbers (``trust-maps``
    from ``trust-maps-000012``, ``explain`` from ``explain-000000-000016``)."""
    words = list(itertools.takewhile(lambda word: not word.isdigit(), part.split("-")))
    return "-".join(words[:2])


@dataclass(frozen=True)
class Checkpoint:
    """The finished stages of one run, in ``<partial>/checkpoint``; ``folder`` ``None``
    keeps nothing (:data:`NO_CHECKPOINT`, for library calls that write no run folder).

    Attributes:
        folder: The checkpoint folder.
        partial: The partial run folder holding it.
        started: When the run first started (the run folder is named after it).
        resumed: The stages and chunks read back rather than computed, in order.
        saves_stages: Whether :meth:`stage` saves what it computes: not on the other ranks
            of a sharded run, which share rank 0's checkpoint and save only their own
            chunks and batches (:meth:`memo`).
    """

    folder: Path | None
    partial: Path | None = None
    started: datetime | None = None
    resumed: list[str] | None = None
    saves_stages: bool = True

    def stage(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()``, saved as ``name``; or, when a finished ``name`` is saved, that.

        A stage read back sends a ``stage_resumed`` event; a stage computed with parts
        read back (:meth:`part`) sends one ``parts_resumed`` event when it ends, with
        their number and a count of each kind (``trust-maps``, ``explain``, …), not an
        event per part: an audit can have thousands. It is sent before the stage is saved,
        so a run killed as its stage's checkpoint appears has told it."""
        before = len(self.resumed or ())

        def computed() -> T:
            value = compute()
            if parts := (self.resumed or [])[before:]:
                kinds = Counter(_kind(p) for p in parts)
                emit("parts_resumed", stage=name, parts=len(parts), kinds=dict(kinds))
            return value

        return self._kept(name, computed, self.saves_stages, part=False)

    def _kept(self, name: str, compute: Callable[[], T], save: bool, part: bool) -> T:
        if self.folder is None:
            return compute()
        target = self.folder / name
        if target.is_dir():
            try:
                value: T = read_value(target)
            except CheckpointError as error:
                log.warning("recomputing %s: its checkpoint cannot be read (%s)", name, error)
            else:
                if self.resumed is not None:
                    self.resumed.append(name)
                if not part:
                    emit("stage_resumed", stage=name)
                return value
        value = compute()
        if not save:
            return value
        try:
            self.save(name, value)
        except CheckpointError as error:  # the run goes on; a resumed one recomputes it
            log.warning("%s is not saved for a resumed run: %s", name, error)
        return value

    def part(self, name: str, compute: Callable[[], T]) -> T:
        """:meth:`stage` for a part of a stage (an evaluation chunk, a batch of
        explanations, a trust check's case or batch), saved by whichever rank computed it.

        A sharded run's parts are named with its number of processes (``-of2``): its
        chunks are cut by that number, and a rank's one thread may round a map's last
        digit otherwise than one process does, so a run resumed with another number of
        processes computes them again (finished stages are read back)."""
        size = world().size
        return self._kept(name if size == 1 else f"{name}-of{size}", compute, True, part=True)

    @property
    def memo(self) -> Memo | None:
        """:meth:`part`, for the stages that save their parts as they go; ``None`` when
        nothing is kept."""
        return self.part if self.folder is not None else None

    def follower(self) -> Checkpoint:
        """This checkpoint as another rank of a sharded run uses it: it reads the finished
        stages, saves its own chunks and batches, and neither saves stages nor removes
        the partial folder (rank 0 does)."""
        return Checkpoint(self.folder, None, self.started, None, saves_stages=False)

    def save(self, name: str, value: Any) -> None:
        """Save ``value`` as ``name``, under a temporary name renamed when complete.

        Raises:
            CheckpointError: ``value`` holds something a checkpoint cannot keep.
            OutputError: The disk is full or not writable (the run then keeps nothing).
        """
        if self.folder is None:
            return
        temporary = self.folder / f".{name}.writing"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            write_value(value, temporary)
            os.replace(temporary, self.folder / name)
        except CheckpointError:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        except OSError as error:  # the disk is full: the run folder could not be written
            shutil.rmtree(temporary, ignore_errors=True)
            out = self.partial.parent if self.partial is not None else self.folder
            raise OutputError(
                f"writing the run folder in {str(out)!r} failed ({error.strerror or error}); "
                f"nothing was kept; check free space and permissions, then run again"
            ) from None

    @contextlib.contextmanager
    def kept_on_failure(self) -> Iterator[None]:
        """Run the stages: an input problem found on the way (an :class:`AuditError`)
        removes the partial folder, since the run must change to go on; anything else
        (a crash, running out of memory, an interrupt, a scheduler's SIGTERM: see
        :func:`terminated_as_exit`) keeps it and says how to go on."""
        try:
            yield
        except AuditError:
            if self.partial is not None:
                shutil.rmtree(self.partial, ignore_errors=True)
            raise
        except BaseException:
            if self.partial is not None:
                log.error(
                    "the finished stages are kept in %s: run the same command again (or "
                    "pass --resume with that folder) to go on from there",
                    self.partial,
                )
            raise


NO_CHECKPOINT = Checkpoint(None)

TERMINATED = 128 + signal.SIGTERM
"""Exit status of a run stopped by SIGTERM (a shell's convention for a signal's death)."""


class Terminated(SystemExit):
    """The run was stopped by SIGTERM: it exits with :data:`TERMINATED`."""

    def __init__(self) -> None:
        super().__init__(TERMINATED)

    def __str__(self) -> str:
        return "stopped by SIGTERM"


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM (a scheduler's time limit sends it before SIGKILL) raises
    :class:`Terminated` in the main thread, so that the run stops as an interrupt does
    (saying where its finished stages are kept) with :data:`TERMINATED`; the previous
    handler comes back afterwards. A forked child (a data-loading worker) that inherited
    the handler dies of the signal as it would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:  # None: a handler installed from C, which Python cannot put back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _identity_of(partial: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads((partial / FOLDER / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _found(out: Path, stem: str, identity: str) -> Path | None:
    """The newest partial run folder in ``out`` of this model stem and identity."""
    if not out.is_dir():
        return None
    matching = [
        partial
        for partial in out.glob(f".{stem}-*.partial")
        if (_identity_of(partial) or {}).get("identity") == identity
    ]
    return max(matching, key=lambda p: p.name) if matching else None


def _chosen(resume: Path, identity: str) -> Path:
    """``--resume``'s folder, checked to be a partial run folder of this very audit.

    Raises:
        ConfigError: It is not a partial run folder, or of another audit.
    """
    recorded = _identity_of(resume)
    if recorded is None:
        raise ConfigError(
            f"--resume {str(resume)!r} is not a partial run folder (no {FOLDER}/run.json); "
            f"pass the hidden .<name>.partial folder an interrupted run left in --out"
        )
    if recorded.get("identity") != identity:
        raise ConfigError(
            f"--resume {str(resume)!r} is another audit's: its model, data or settings "
            f"differ from this command's; run the command it was started with"
        )
    return resume


def open_checkpoint(
    out: Path, stem: str, started: datetime, identity: str, resume: Path | None
) -> Checkpoint:
    """The checkpoint of this run: ``resume``'s, else the newest partial folder in ``out``
    with the same identity, else a new partial folder named after ``started``.

    Raises:
        ConfigError: ``resume`` is not a partial folder of this audit.
        OutputError: The partial folder cannot be created.
    """
    try:
        return _opened(out, stem, started, identity, resume)
    except OSError as error:
        raise OutputError(
            f"cannot create a run folder in {str(out)!r} ({error.strerror or error}); "
            f"pass --out with a writable folder"
        ) from None


def _opened(
    out: Path, stem: str, started: datetime, identity: str, resume: Path | None
) -> Checkpoint:
    partial = _chosen(resume, identity) if resume is not None else _found(out, stem, identity)
    if partial is not None:
        recorded = _identity_of(partial) or {}
        first = datetime.fromisoformat(str(recorded.get("started", started.isoformat())))
        log.warning("resuming the interrupted run in %s", partial)
        emit("run_resumed", folder=str(partial))
        return Checkpoint(partial / FOLDER, partial, first, [])
    partial = out / f".{run_folder(out, stem, started).name}.partial"
    (partial / FOLDER).mkdir(parents=True)
    run = {"identity": identity, "started": started.isoformat(), "auditor": __version__}
    (partial / FOLDER / "run.json").write_text(json.dumps(run, indent=2), encoding="utf-8")
    return Checkpoint(partial / FOLDER, partial, started, [])
