"""The run folder's documents: ``metrics.json``, ``manifest.json`` and every CSV table.

The JSON layouts are written here, once, and described by JSON Schemas shipped in the
package (``auditor/schemas/metrics.schema.json``, ``manifest.schema.json``); the tests
validate every run folder they make against them. ``schema_version`` changes whenever a
layout changes in a way a reader would notice.

Every CSV table goes through :func:`write_csv`, which keeps a spreadsheet from reading
a cell as a formula (CSV injection): text that comes from file names, labels or
metadata and starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
leading single quote, as OWASP advises; numbers, and text that is a plain number, stay
as they are.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pandas as pd

from auditor import __version__
from auditor.clinical import Clinical
from auditor.clinical.files import (
    curves_document,
    curves_frame,
    dependence_document,
    dependence_frame,
    fairness_document,
    label_curves_frame,
    label_operating_document,
    label_subgroups_frame,
    operating_document,
    subgroups_frame,
    triple,
)
from auditor.concepts.analysis import ConceptAnalysis, concept_documents
from auditor.counterfactual.files import counterfactual_document
from auditor.counterfactual.stage import Counterfactuals
from auditor.evaluate import Evaluation
from auditor.load import file_sha256
from auditor.measure import Trust
from auditor.metrics import Metrics
from auditor.multilabel.calibration import LabelCalibration
from auditor.resample import Resampling
from auditor.resources import resource_path
from auditor.robustness import Robustness
from auditor.robustness.files import robustness_document
from auditor.similarity.analysis import Similarity
from auditor.similarity.files import similarity_document

__all__ = [
    "MANIFEST_SCHEMA_VERSION",
    "METRICS_SCHEMA_VERSION",
    "curves_frame",
    "dependence_document",
    "dependence_frame",
    "fairness_document",
    "label_calibration_document",
    "label_curves_frame",
    "label_subgroups_frame",
    "manifest_document",
    "metrics_document",
    "operating_document",
    "schema",
    "spreadsheet_safe",
    "subgroups_frame",
    "trust_document",
    "write_checksums",
    "write_csv",
    "write_json",
]

CHECKSUMS = "SHA256SUMS"
"""The run folder's last file: the SHA-256 of every other one."""

METRICS_SCHEMA_VERSION = 16
# 2: "trust"; 3: the confusion matrix sparse, "metadata_dependence", "operating_point";
# 4: "resampling" (a declared patient column), "robustness"
# 5: "dissection"; 6: "tcav"; 7: "similarity", "counterfactuals"; 8: "trust.plan", "precision"
# 9: multi-label models ("multi_label", the single-label keys then absent)
# 10: "metadata_dependence.columns" one per column and true class compared (step-down min-P)
# 11: "metadata_dependence" in a multi-label audit too: each column's "target", "targets"
# 12: "label_calibration", "label_failures" (a multi-label model's, label by label),
# "robustness" in a multi-label audit too, and its "labels"
# 13: "label_fairness", "label_operating" (a multi-label model's, label by label)
# 14: "similarity" in a multi-label audit too (its first variable: "set of labels")
# 15: "dissection", "tcav" and "counterfactuals" in a multi-label audit too (TCAV's
# "class" is a label; each counterfactual flips one label's call)
# 16: a multi-label model's misclassified image is searched for a counterfactual once per
# wrong call (its counterfactual-labels most confident; "left_out": the others);
# "counterfactuals" counts searches per kind, and images per artefact concept
MANIFEST_SCHEMA_VERSION = 3  # 3: the command line and the resolved configuration


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a run-folder document: ``"metrics"``, ``"manifest"`` or
    ``"comparison"``."""
    path = resource_path("schemas", f"{name}.schema.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN becomes null, tuples become lists."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _shortcuts_document(trust: Trust) -> dict[str, Any] | None:
    shortcuts = trust.shortcuts
    if shortcuts is None:
        return None
    return {
        "methods": list(shortcuts.methods),
        "min_images": shortcuts.min_images,
        "groups": [
            {
                "kind": g.kind,
                "name": g.name,
                "n": g.n,
                "outside_roi": g.outside[0],
                "outside_roi_ci": [g.outside[1], g.outside[2]],
                "outside_area": g.outside_area,
                "region": g.region,
                "region_share": g.region_share,
                "region_area": g.region_area,
                "flagged": g.flagged,
                "too_few": g.too_few,
                "finding": g.sentence() if g.flagged else None,
            }
            for g in shortcuts.groups
        ],
    }


def trust_document(trust: Trust) -> dict[str, Any]:
    """The ``trust`` section of ``metrics.json``: verdicts, shortcut findings, settings."""
    return {
        "settings": asdict(trust.settings),
        "methods": trust.verdicts.astype(object).to_dict("records"),
        "randomisation_steps": [
            {"label": step.label, "share_of_modules": step.share} for step in trust.steps
        ],
        "not_measured": trust.not_measured,
        "agreement": {key: dict(row.items()) for key, row in trust.agreement.iterrows()},
        "shortcuts": _shortcuts_document(trust),
        "plan": _plan_document(trust),
    }


def _plan_document(trust: Trust) -> dict[str, Any]:
    """The trust stage's pass plan: forward-pass units and each method's protocol."""
    plan = trust.plan
    return {
        "budget": plan.budget,
        "explain_passes": plan.explain,
        "trust_passes": plan.total,
        "full_protocol_passes": plan.full_total,
        "ratio": plan.ratio,
        "within_budget": plan.within,
        "full": asdict(plan.full),
        "protocols": {key: asdict(protocol) for key, protocol in plan.protocols.items()},
    }


def resampling_document(resampling: Resampling) -> dict[str, Any]:
    """What the bootstrap resampled (``metrics.json`` ``resampling``)."""
    return {
        "unit": "images" if resampling.codes is None else "groups",
        "column": resampling.column,
        "groups": resampling.groups,
        "images_without_value": resampling.unvalued,
    }


def metrics_document(
    evaluation: Evaluation,
    classes: tuple[str, ...],
    trust: Trust,
    clinical: Clinical | None = None,
    robustness: Robustness | None = None,
    concepts: ConceptAnalysis | None = None,
    similarity: Similarity | None = None,
    counterfactuals: Counterfactuals | None = None,
) -> dict[str, Any]:
    """A single-label model's ``metrics.json`` (a multi-label one's: label_metrics_document)."""
    m = cast(Metrics, evaluation.metrics)  # a single-label evaluation has its metrics
    per_class = []
    for c in m.per_class:
        row = asdict(c)
        row["class"] = row.pop("name")
        per_class.append(row)
    return _clean(
        {
            **_evaluated(evaluation, classes),
            "accuracy": asdict(m.accuracy),
            "balanced_accuracy": asdict(m.balanced_accuracy),
            "macro_auc": m.macro_auc,
            "ece": m.ece,
            "per_class": per_class,
            "confusion": [
                {"true": classes[c.true], "predicted": classes[c.predicted], "images": c.count}
                for c in m.confusion
            ],
            "calibration": [asdict(b) for b in m.calibration],
            "precision": asdict(p) if (p := evaluation.precision_check) else None,
            "trust": trust_document(trust),
            "operating_point": operating_document(clinical.operating if clinical else None),
            "curves": curves_document(clinical.operating if clinical else None),
            "subgroups": (
                subgroups_frame(clinical.fairness).to_dict(orient="records")
                if clinical and clinical.fairness
                else None
            ),
            "metadata_dependence": (
                dependence_document(clinical.dependence, clinical.links) if clinical else None
            ),
            "fairness": fairness_document(clinical.fairness if clinical else None),
            "positive_calibration": (
                asdict(clinical.calibration) if clinical and clinical.calibration else None
            ),
            "class_ece": dict(zip(classes, clinical.class_ece, strict=True)) if clinical else None,
            "class_auc": {k: triple(v) for k, v in clinical.class_auc.items()} if clinical else {},
            "failure_modes": asdict(clinical.failures) if clinical else None,
            "resampling": resampling_document(clinical.resampling if clinical else Resampling()),
            "robustness": robustness_document(robustness),
            **concept_documents(concepts or ConceptAnalysis()),
            "similarity": similarity_document(similarity),
            "counterfactuals": counterfactual_document(counterfactuals),
        }
    )


def _evaluated(evaluation: Evaluation, classes: tuple[str, ...]) -> dict[str, Any]:
    """The head of either ``metrics.json``: what was evaluated, and how it was read."""
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "n_images": evaluation.n_images,
        "n_excluded": len(evaluation.excluded),
        "classes": list(classes),
        "output_kind": evaluation.output_kind.name.lower(),
    }


def label_metrics_document(
    evaluation: Evaluation, classes: tuple[str, ...], trust: Trust, clinical: Clinical,
    robustness: Robustness | None = None,
    explained: tuple[ConceptAnalysis, Counterfactuals | None] | None = None,
    similarity: Similarity | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A multi-label model's ``metrics.json``: the metrics of every label and of the
    whole set of labels under ``multi_label``, the metadata dependence, the calibration,
    the failure modes, the subgroups' disparities and the operating point label by
    label, the robustness, the concepts (network dissection, and TCAV label by label), the
    counterfactuals (each search flipping one label's call; ``explained``: the concepts
    and the counterfactuals) and the similarity."""
    m = evaluation.label_metrics
    if m is None:
        raise ValueError("a multi-label evaluation without its metrics")
    labels = []
    for row in m.labels:
        found = asdict(row)
        found["label"] = found.pop("name")
        labels.append(found)
    whole = {k: v for k, v in asdict(m).items() if k not in ("labels", "resampled", "n_images")}
    resampling = Resampling.of(evaluation.predictions, evaluation.settings.patient_column)
    return _clean(
        {
            **_evaluated(evaluation, classes),
            "multi_label": {"labels": labels, **whole},
            "precision": asdict(p) if (p := evaluation.precision_check) else None,
            "trust": trust_document(trust),
            "metadata_dependence": dependence_document(clinical.dependence),
            "label_calibration": label_calibration_document(clinical.label_calibration),
            "label_failures": asdict(clinical.label_failures) if clinical.label_failures else None,
            "label_fairness": [fairness_document(f) for f in clinical.label_fairness],
            "label_operating": label_operating_document(classes, clinical.label_operating),
            "robustness": robustness_document(robustness),
            **concept_documents(explained[0] if explained else ConceptAnalysis()),
            "counterfactuals": counterfactual_document(explained[1] if explained else None),
            "similarity": similarity_document(similarity),
            "resampling": resampling_document(resampling),
        }
    )


def label_calibration_document(
    calibrations: tuple[LabelCalibration, ...],
) -> list[dict[str, Any]]:
    """Each label's calibration (``metrics.json`` ``label_calibration``): its fit's
    figures at the top level, null where it has no fit."""
    rows = []
    for c in calibrations:
        fit = asdict(c.fit) if c.fit else dict.fromkeys(("slope", "intercept", "brier", "curve"))
        fit.pop("positive_class", None)
        rows.append(
            {"label": c.label, "positives": c.positives, "ece": asdict(c.ece),
             "verdict": c.verdict, **fit}
        )  # fmt: skip
    return rows


def write_checksums(folder: Path) -> None:
    """``SHA256SUMS``: every other file of ``folder`` as ``sha256sum`` writes it (check with
    ``sha256sum -c SHA256SUMS`` in the folder)."""
    lines = [
        f"{file_sha256(p)}  {p.name}\n"
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != CHECKSUMS
    ]
    (folder / CHECKSUMS).write_text("".join(lines), encoding="utf-8")


def manifest_document(
    folder: Path,
    model: tuple[Path, str],
    data: tuple[Path, str],
    run: tuple[str, dict[str, Any]],
    times: tuple[datetime, datetime],
) -> dict[str, Any]:
    """The content of ``manifest.json``: what was audited and the hash of every file written.

    Args:
        folder: The run folder, with every other file already written.
        model: The model file and its SHA-256.
        data: The data source and the data SHA-256.
        run: The command line, whole, and the resolved configuration
            (:meth:`~auditor.config.AuditConfig.as_dict`).
        times: When the run started and when its stages finished (aware).
    """
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "auditor_version": __version__,
        "model": {"path": str(model[0]), "sha256": model[1]},
        "data": {"source": str(data[0]), "sha256": data[1]},
        "command": run[0],
        "config": run[1],
        "started": times[0].isoformat(),
        "finished": times[1].isoformat(),
        "files": {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()},
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON (no NaN: it is not JSON)."""
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_safe(text: str) -> str:
    """``text`` as a spreadsheet shows it literally: a leading ``'`` where it would start a
    formula (``=1+1`` → ``'=1+1``); a plain number such as ``-0.5`` is left alone, and so
    is a lone ``-`` (no formula; a multi-label table's "no label")."""
    if text.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text) and text != "-":
        return "'" + text
    return text


def write_csv(frame: pd.DataFrame, path: Path | io.StringIO) -> None:
    """Write ``frame`` without its index, every text cell and header spreadsheet-safe."""
    safe = frame.copy()
    for column in safe.columns:
        if pd.api.types.is_object_dtype(safe[column]) or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(
                lambda value: spreadsheet_safe(value) if isinstance(value, str) else value
            )
    safe.columns = [spreadsheet_safe(str(column)) for column in safe.columns]
    safe.to_csv(path, index=False)
