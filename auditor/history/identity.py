"""What makes two runs the same audit: the model's, the data's and the configuration's
hashes, computed before any stage runs (for ``--skip-if-unchanged``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from auditor.data import Dataset
from auditor.evaluate import data_entry, data_sha256
from auditor.load import file_sha256

__all__ = ["LOCATIONS", "config_sha256", "dataset_sha256", "model_identity"]

LOCATIONS = frozenset({"model", "data", "out", "history", "model_name", "model_version"})
"""Settings that say where things are or what they are called, not what is computed: the
model and data are identified by their content instead, and moving a folder or renaming
a model does not make an audit new."""


def config_sha256(resolved: dict[str, Any], version: str) -> str:
    """SHA-256 of a resolved configuration (:meth:`AuditConfig.as_dict`, as ``manifest.json``
    records it) and the Auditor ``version`` that ran it (another version may compute
    otherwise): every setting's value but the :data:`LOCATIONS` (not where each came
    from), the policy and the documentation, as sorted JSON."""
    values = {k: v["value"] for k, v in resolved.items() if k not in LOCATIONS}
    values["auditor_version"] = version
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def dataset_sha256(dataset: Dataset) -> str:
    """The data SHA-256 the evaluation will record (:func:`auditor.evaluate.data_sha256`),
    from the files alone: ``""`` for a file that cannot be read, as the evaluation does."""
    entries: list[tuple[str, ...]] = []
    for sample in dataset.samples:
        try:
            sha = file_sha256(sample.path)
        except OSError:
            sha = ""
        entries.append(data_entry(dataset, sample.index, sha))
    entries += [(e.relpath, "") for e in dataset.excluded]
    return data_sha256(entries)


def model_identity(resolved: dict[str, Any], model_path: str) -> tuple[str, str]:
    """The model's name and version in the history, from a resolved configuration: the
    ``model-name`` setting or the model file's stem, and ``model-version``."""
    name = resolved.get("model_name", {}).get("value") or Path(model_path).stem
    return str(name), str(resolved.get("model_version", {}).get("value") or "")
