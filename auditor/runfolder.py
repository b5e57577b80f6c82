"""The run folder: created under a hidden ``.partial`` name, written, and renamed into
place only when every file is written, so a folder with the final name is always
complete; on any failure nothing is kept."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from auditor.errors import OutputError

__all__ = ["assemble", "check_writable", "run_folder"]


def run_folder(out: Path, stem: str, started: datetime) -> Path:
    """``<out>/<stem>-<UTC timestamp>[-n]``: a name that neither a run folder nor a partial
    one has yet."""
    base = f"{stem}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = out / base, 1
    while candidate.exists() or (out / f".{candidate.name}.partial").exists():
        n += 1
        candidate = out / f"{base}-{n}"
    return candidate


def _cannot_create(out: Path, error: OSError) -> OutputError:
    return OutputError(
        f"cannot create a run folder in {str(out)!r} ({error.strerror or error}); "
        f"pass --out with a writable folder"
    )


def check_writable(out: Path) -> None:
    """Fail before any stage runs when ``out`` cannot hold a run folder (nothing is created:
    ``out`` or its nearest existing parent must be a folder this process can write to).

    Raises:
        OutputError: ``out`` is not a folder, or cannot be written into.
    """
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise _cannot_create(out, NotADirectoryError(f"{str(existing)!r} is not a folder"))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _cannot_create(out, PermissionError(f"{str(existing)!r} is not writable"))


def assemble(
    out: Path,
    stem: str,
    started: datetime,
    write: Callable[[Path], None],
    partial: Path | None = None,
) -> Path:
    """Create the run folder as a hidden ``.partial`` folder (or use ``partial``, a resumable
    run's, whose ``checkpoint/`` is removed once every file is written), ``write`` into it
    and rename it into place.

    Raises:
        OutputError: The folder cannot be created or written (nothing is kept but a
            resumable run's checkpoint).
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        folder = run_folder(out, stem, started)
        if partial is None:
            partial = out / f".{folder.name}.partial"
            partial.mkdir()
            keep: Path | None = None
        else:
            named = out / partial.name[1:].removesuffix(".partial")
            folder = folder if named.exists() else named
            keep = partial / "checkpoint"
    except OSError as error:
        raise _cannot_create(out, error) from None
    try:
        write(partial)
        if keep is not None:
            shutil.rmtree(keep)
        os.replace(partial, folder)
    except OSError as error:
        _clean(partial, keep)
        kept = f"the finished stages are kept in {str(partial)!r}" if keep else "nothing was kept"
        raise OutputError(
            f"writing the run folder in {str(out)!r} failed ({error.strerror or error}); "
            f"{kept}; check free space and permissions, then run again"
        ) from None
    except BaseException:
        _clean(partial, keep)
        raise
    return folder


def _clean(partial: Path, keep: Path | None) -> None:
    """Remove what a failed write left in ``partial``: all of it, or all but ``keep``."""
    if keep is None or not keep.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
        return
    for path in partial.iterdir():
        if path != keep:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
