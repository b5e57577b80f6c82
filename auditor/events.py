"""Stage events a scheduler can keep: one line when a stage starts, one when it ends.

Progress bars are for a person at a terminal; under cron or CI (stderr is not a
terminal) they are off, and a run would print nothing for minutes. There, each stage
logs ``auditor: <stage> started`` and ``auditor: <stage> finished in 12.3 s (counts)``
on stderr; ``--log-json FILE`` writes the same events, and the run's start and end, as
JSON lines (``-``: stderr)::

    {"event": "stage_end", "stage": "evaluate", "time": "2026-…Z", "seconds": 12.3,
     "counts": {"images": 400, "excluded": 0}}
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from auditor.errors import ConfigError

__all__ = ["configure_events", "durations", "emit", "stage"]


@dataclass
class _Sinks:
    plain: bool = False
    terminal: bool = False  # plan lines at a terminal (set up by the command line)
    json: IO[str] | None = None
    owned: list[IO[str]] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)


_SINKS = _Sinks()


def configure_events(plain: bool | None = None, json_path: str | None = None) -> None:
    """Where events go: plain lines on stderr (``None``: when stderr is not a terminal;
    at a terminal only the plan's lines) and JSON lines to ``json_path`` (``"-"``:
    stderr; ``None``: nowhere).

    Raises:
        ConfigError: ``json_path`` cannot be opened for appending.
    """
    close_events()
    _SINKS.plain = not sys.stderr.isatty() if plain is None else plain
    _SINKS.terminal = plain is None and sys.stderr.isatty()
    if json_path == "-":  # the JSON lines are stderr's: no plain lines between them
        _SINKS.plain = False
        _SINKS.json = sys.stderr
    elif json_path is not None:
        try:
            handle = Path(json_path).open("a", encoding="utf-8")  # noqa: SIM115 - kept open
        except OSError as error:
            raise ConfigError(
                f"--log-json {json_path!r} cannot be opened ({error.strerror or error}); "
                f"pass a file in a writable folder, or - for stderr"
            ) from None
        _SINKS.json = handle
        _SINKS.owned.append(handle)


def close_events() -> None:
    """Close the JSON file and send no more events."""
    for handle in _SINKS.owned:
        handle.close()
    _SINKS.owned.clear()
    _SINKS.plain, _SINKS.terminal, _SINKS.json = False, False, None


def _counts_text(counts: dict[str, Any]) -> str:
    """``12 images, policy passed``: a number before its name, a text after it."""
    return ", ".join(
        f"{value} {name.replace('_', ' ')}"
        if isinstance(value, int | float)
        else f"{name.replace('_', ' ')} {value}"
        for name, value in counts.items()
    )


def emit(event: str, stage: str | None = None, **fields: Any) -> None:
    """Send one event: ``run_start``, ``plan`` (one per counted stage and one in all,
    also shown at a terminal), ``stage_start``, ``stage_end``, ``run_end``,
    ``run_failed`` or ``run_skipped`` (the last two as JSON only: the error's or the
    skip's own line says it on stderr), ``run_resumed``, ``stage_resumed`` (a stage
    read back from an interrupted run's checkpoint) and ``parts_resumed`` (the parts of
    an unfinished stage read back, counted once as the stage ends)."""
    if _SINKS.json is not None:
        record = {"event": event, "stage": stage, "time": datetime.now(UTC).isoformat()}
        _SINKS.json.write(json.dumps({**record, **fields}, default=str) + "\n")
        _SINKS.json.flush()
    if event == "run_start":
        _SINKS.durations.clear()
    # The plan is for a person at a terminal too (with the progress bars).
    shown = _SINKS.plain or (event == "plan" and _SINKS.terminal and _SINKS.json is not sys.stderr)
    if shown and event not in ("run_failed", "run_skipped"):  # their own lines say it
        print(f"auditor: {_plain(event, stage, fields)}", file=sys.stderr, flush=True)


def durations() -> dict[str, float]:
    """Seconds of each stage of the current run (since ``run_start``), by stage name."""
    return dict(_SINKS.durations)


def _plain(event: str, stage: str | None, fields: dict[str, Any]) -> str:
    """``evaluate started``, ``evaluate finished in 1.2 s (400 images)``, …"""
    if event == "plan":
        return f"plan: {fields['text']}"
    if event == "run_resumed":
        return f"resuming the interrupted run in {fields['folder']}"
    if event == "stage_resumed":
        return f"{stage} read back from the checkpoint"
    if event == "parts_resumed":
        kinds = ", ".join(f"{kind} {count}" for kind, count in fields["kinds"].items())
        return f"{stage}: {fields['parts']} parts read back from the checkpoint ({kinds})"
    name = stage or event.rsplit("_", 1)[0]
    if "seconds" in fields:
        counts = _counts_text(fields.get("counts") or {})
        return f"{name} finished in {fields['seconds']:.1f} s" + (f" ({counts})" if counts else "")
    details = ", ".join(f"{key} {value}" for key, value in fields.items())
    return f"{name} started" + (f" ({details})" if details else "")


@contextmanager
def stage(name: str) -> Iterator[dict[str, Any]]:
    """Emit ``stage_start``, run the block, emit ``stage_end`` with its duration and the
    counts the block put in the yielded dict (nothing on an exception: the error says)."""
    emit("stage_start", name)
    started = time.perf_counter()
    counts: dict[str, Any] = {}
    yield counts
    _SINKS.durations[name] = time.perf_counter() - started
    emit("stage_end", name, seconds=round(_SINKS.durations[name], 3), counts=counts)
