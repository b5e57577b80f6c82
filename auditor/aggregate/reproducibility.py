"""The reproducibility section: command, seed, device, hashes, resolved config, versions."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from auditor.aggregate.inputs import AuditInputs
from auditor.plan import passes_text
from auditor.settings import ConfigRow, config_rows, named_path

__all__ = ["CostRow", "ReproducibilityView", "document_command", "reproducibility_view"]

_ABSOLUTE = re.compile(r"(?<![\w.~])/[^\s=,;:]+")
_PLAIN = re.compile(r"[\w@%+=:,./…-]+")


def document_command(command: str) -> str:
    """The command line as the document shows it: every absolute path named by its folder
    and file (:func:`~auditor.settings.named_path`); ``manifest.json`` keeps it whole."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    shown = [_ABSOLUTE.sub(lambda m: "…/" + named_path(Path(m.group(0))), w) for w in words]
    return " ".join(w if _PLAIN.fullmatch(w) else shlex.quote(w) for w in shown)


@dataclass(frozen=True)
class CostRow:
    """One stage of the pass plan against what it took.

    Attributes:
        stage: The stage's name.
        passes: Its planned passes in words ("at most 1,200 forward passes").
        estimated: The plan's time estimate, in seconds.
        took: The seconds it took (NaN when it did not run as a stage of its own).
    """

    stage: str
    passes: str
    estimated: float
    took: float


def _cost_rows(inputs: AuditInputs) -> tuple[CostRow, ...]:
    plan = inputs.plan
    if plan is None:
        return ()
    return tuple(
        CostRow(
            stage.stage,
            ("at most " if stage.at_most else "") + passes_text(stage),
            plan.seconds(stage),
            inputs.stage_seconds.get(stage.stage, float("nan")),
        )
        for stage in plan.stages
    )


@dataclass(frozen=True)
class ReproducibilityView:
    """The reproducibility section.

    Attributes:
        command: The command line, absolute paths shortened (:func:`document_command`).
        started: Start time, UTC.
        finished: End time, UTC.
        config_rows: The resolved configuration, one row per setting.
        versions: ``(package, version)`` pairs.
        cost: The pass plan, stage by stage, against each stage's time.
        pass_ms: The plan's milliseconds per image of a forward pass.
        resumed: What an interrupted run's checkpoint gave this one, in words ("": the
            run was not interrupted).
    """

    command: str
    seed: int
    device_name: str
    model_sha256: str
    data_sha256: str
    started: str
    finished: str
    config_rows: tuple[ConfigRow, ...]
    versions: tuple[tuple[str, str], ...]
    cost: tuple[CostRow, ...]
    pass_ms: float
    resumed: str


def resumed_text(resumed: tuple[str, ...]) -> str:
    """``"evaluate, explain (2 batches of it)"``: the stages, and the evaluation's chunks,
    explanation batches and trust checks' parts of unfinished stages, read back from a
    checkpoint."""
    stages = [name for name in resumed if "-" not in name]
    parts = list(stages)
    units_of = (("evaluate", "chunk", "chunks"), ("explain", "batch", "batches"))
    for stage, unit, units in (*units_of, ("trust", "part", "parts")):
        count = sum(1 for name in resumed if name.startswith(f"{stage}-"))
        if count and stage not in stages:
            parts.append(f"{stage} ({count} {unit if count == 1 else units} of it)")
    if not parts:
        return ""
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"Resumed after an interruption; read back from its checkpoint: {listed}"


def reproducibility_view(inputs: AuditInputs) -> ReproducibilityView:
    """Everything needed to run this audit again and check it is the same model and data."""
    return ReproducibilityView(
        command=document_command(inputs.command),
        seed=inputs.config.seed,
        device_name=inputs.device_name,
        model_sha256=inputs.architecture.sha256,
        data_sha256=inputs.evaluation.data_sha256,
        started=inputs.started,
        finished=inputs.finished,
        config_rows=config_rows(inputs.config),
        versions=inputs.versions,
        cost=_cost_rows(inputs),
        pass_ms=inputs.plan.pass_seconds * 1e3 if inputs.plan is not None else float("nan"),
        resumed=resumed_text(inputs.resumed),
    )
