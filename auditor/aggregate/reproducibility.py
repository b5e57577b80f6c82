"""The reproducibility section: command, seed, device, hashes, resolved config, versions."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.settings import ConfigRow, config_rows

__all__ = ["ReproducibilityView", "reproducibility_view"]


@dataclass(frozen=True)
class ReproducibilityView:
    """The reproducibility section.

    Attributes:
        started: Start time, UTC.
        finished: End time, UTC.
        config_rows: The resolved configuration, one row per setting.
        versions: ``(package, version)`` pairs.
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


def reproducibility_view(inputs: AuditInputs) -> ReproducibilityView:
    """Everything needed to run this audit again and check it is the same model and data."""
    return ReproducibilityView(
        command=inputs.command,
        seed=inputs.config.seed,
        device_name=inputs.device_name,
        model_sha256=inputs.architecture.sha256,
        data_sha256=inputs.evaluation.data_sha256,
        started=inputs.started,
        finished=inputs.finished,
        config_rows=config_rows(inputs.config),
        versions=inputs.versions,
    )
