"""What a comparison reads of an audit, from its run folder or from a run in progress."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor.documents import write_csv
from auditor.errors import ConfigError
from auditor.evaluate import Evaluation
from auditor.explain.engine import Explanations
from auditor.explain.store import ok_maps
from auditor.measure import Trust

__all__ = ["Audit", "MapKey", "audit_of_run", "intensities_frame", "keyed_maps", "read_audit"]

MapKey = tuple[str, str, str]
"""A map's key across audits: the image's SHA-256, the class explained and the method."""

CHANNELS = {1: ("gray",), 3: ("red", "green", "blue")}


def intensities_frame(predictions: pd.DataFrame, statistics: np.ndarray) -> pd.DataFrame:
    """``intensities.csv``: ``index``, then each channel's pixel mean and standard
    deviation in [0, 1] (``mean_red`` … ``std_blue``, or ``mean_gray``, ``std_gray``)."""
    channels = statistics.shape[1] // 2
    names = CHANNELS.get(channels, tuple(f"channel{c}" for c in range(channels)))
    columns = [f"mean_{n}" for n in names] + [f"std_{n}" for n in names]
    frame = pd.DataFrame(statistics.astype(np.float64), columns=columns)
    frame.insert(0, "index", predictions["index"].to_numpy())
    return frame


@dataclass(frozen=True)
class Audit:
    """One side of a comparison.

    Attributes:
        label: How the comparison names it (``run 3, 2026-11-30 10:06``).
        identity: ``model_name``, ``model_version``, ``model_sha256``, ``data_sha256``,
            ``started`` and ``folder``.
        metrics: Its ``metrics.json``.
        predictions: Its ``predictions.csv``.
        intensities: Its ``intensities.csv`` (``None``: not recorded).
        embeddings: Its embeddings, rows as ``predictions`` (``None``: none kept).
        maps: Each explanation map by :data:`MapKey`.
        trusted: The methods whose maps can be read (trust level ``good``).
    """

    label: str
    identity: dict[str, str]
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    intensities: pd.DataFrame | None = None
    embeddings: np.ndarray | None = None
    maps: dict[MapKey, np.ndarray] = field(default_factory=dict)
    trusted: tuple[str, ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metrics["classes"])

    @property
    def multi_label(self) -> bool:
        """Whether it audited a multi-label model."""
        return "multi_label" in self.metrics

    @property
    def positive(self) -> str | None:
        """The positive class of a binary audit (``None`` otherwise)."""
        operating = self.metrics.get("operating_point")
        return operating["positive_class"] if operating else None

    @property
    def threshold(self) -> float | None:
        operating = self.metrics.get("operating_point")
        return float(operating["threshold"]) if operating else None


def keyed_maps(
    records: pd.DataFrame, maps: np.ndarray, predictions: pd.DataFrame
) -> dict[MapKey, np.ndarray]:
    """Maps (rows as the ``ok`` rows of ``records``) keyed by image SHA-256, class and
    method."""
    sha = dict(zip(predictions["index"], predictions["sha256"], strict=True))
    return {
        (str(sha[int(i)]), str(target), str(method)): maps[row]
        for row, (i, target, method) in enumerate(
            zip(records["index"], records["target"], records["method"], strict=True)
        )
        if int(i) in sha
    }


def audit_of_run(
    identity: dict[str, str],
    metrics: dict[str, Any],
    evaluation: Evaluation,
    explanations: Explanations,
    trust: Trust,
) -> Audit:
    """The audit in progress, from its stages' outputs (``identity`` without the data's
    SHA-256, which the evaluation knows)."""
    predictions = _as_written(evaluation.predictions)
    records, maps = ok_maps(explanations)
    statistics = evaluation.intensities
    embeddings = evaluation.embeddings
    verdicts = trust.verdicts
    return Audit(
        label="this audit",
        identity={**identity, "data_sha256": evaluation.data_sha256},
        metrics=metrics,
        predictions=predictions,
        intensities=intensities_frame(predictions, statistics) if statistics is not None else None,
        embeddings=embeddings.rows_at(slice(None)) if embeddings is not None else None,
        maps=keyed_maps(records, maps, predictions),
        trusted=tuple(verdicts.loc[verdicts["level"] == "good", "method"]),
    )


def read_predictions(source: Path | io.StringIO) -> pd.DataFrame:
    """``predictions.csv`` with every metadata value as the text the file holds (pandas
    would read ``1``, ``1.0`` and a blank as numbers on one side and not on the other),
    the scores as numbers and ``correct`` as booleans."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    scores = [c for c in frame.columns if c == "confidence" or c.startswith("p_")]
    for column in scores:  # a multi-label audit's has no confidence
        frame[column] = frame[column].astype(np.float64)
    frame["index"] = frame["index"].astype(np.int64)
    frame["correct"] = frame["correct"] == "True"
    return frame


def _as_written(predictions: pd.DataFrame) -> pd.DataFrame:
    """The run's predictions as a later comparison will read them from its folder."""
    buffer = io.StringIO()
    write_csv(predictions, buffer)
    buffer.seek(0)
    return read_predictions(buffer)


def _read(folder: Path, name: str) -> Any:
    path = folder / name
    try:
        if name.endswith(".json"):
            return json.loads(path.read_text(encoding="utf-8"))
        if name == "predictions.csv":
            return read_predictions(path)
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{str(path)!r} cannot be read ({error.__class__.__name__}); pass a complete run "
            f"folder (one that `auditor run` wrote)"
        ) from None


def _maps(folder: Path, predictions: pd.DataFrame) -> dict[MapKey, np.ndarray]:
    path = folder / "explanations.npz"
    if not path.is_file():
        return {}
    with np.load(path) as stored:
        records = pd.DataFrame({k: stored[k] for k in ("index", "target", "method")})
        return keyed_maps(records, stored["maps"], predictions)


def read_audit(folder: Path, label: str | None = None) -> Audit:
    """The audit in the run folder ``folder``.

    Raises:
        ConfigError: ``folder`` is not a complete run folder.
    """
    if not folder.is_dir():
        raise ConfigError(f"{str(folder)!r} is not a folder; pass a run folder or a history id")
    manifest, metrics = _read(folder, "manifest.json"), _read(folder, "metrics.json")
    predictions = _read(folder, "predictions.csv")
    config = manifest.get("config", {})
    identity = {
        "model_name": str(config.get("model_name", {}).get("value") or
                          Path(manifest["model"]["path"]).stem),
        "model_version": str(config.get("model_version", {}).get("value") or ""),
        "model_sha256": manifest["model"]["sha256"],
        "data_sha256": manifest["data"]["sha256"],
        "started": manifest["started"],
        "folder": str(folder.absolute()),
    }  # fmt: skip
    trust = _read(folder, "trust.csv") if (folder / "trust.csv").is_file() else None
    embeddings = folder / "embeddings.npy"
    return Audit(
        label=label or folder.name,
        identity=identity,
        metrics=metrics,
        predictions=predictions,
        intensities=(
            _read(folder, "intensities.csv") if (folder / "intensities.csv").is_file() else None
        ),
        embeddings=np.load(embeddings, mmap_mode="r") if embeddings.is_file() else None,
        maps=_maps(folder, predictions),
        trusted=tuple(trust.loc[trust["level"] == "good", "method"]) if trust is not None else (),
    )
