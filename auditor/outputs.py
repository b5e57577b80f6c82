"""What the audit computed, and the run folder's files written from it.

:class:`Loaded` is what the audit runs on, :class:`Results` what the analysis stages
computed; :func:`write_run_folder` writes every file of the run folder from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from auditor.aggregate import ReportData
from auditor.aggregate.report import with_evidence
from auditor.architecture import ArchitectureProfile, layers_frame
from auditor.clinical import Clinical
from auditor.compare import Comparison, comparison_document
from auditor.compare.audits import intensities_frame
from auditor.concepts.analysis import ConceptAnalysis, concept_frames
from auditor.concepts.data import ConceptData
from auditor.config import AuditConfig
from auditor.counterfactual.stage import Counterfactuals
from auditor.data import Dataset
from auditor.documents import (
    curves_frame,
    dependence_frame,
    label_curves_frame,
    label_subgroups_frame,
    manifest_document,
    subgroups_frame,
    write_checksums,
    write_csv,
    write_json,
)
from auditor.evaluate import Evaluation
from auditor.explain.engine import Explanations
from auditor.explain.store import save_features, save_maps
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind, file_sha256
from auditor.measure import Trust
from auditor.policy import PolicyResult, junit_xml, policy_document
from auditor.report.markdown import render_markdown
from auditor.report.render import render_html, write_pdf
from auditor.robustness import Perturbed, Robustness
from auditor.robustness.files import robustness_frame, robustness_label_frame
from auditor.select import Selection
from auditor.similarity.analysis import Similarity
from auditor.similarity.embeddings import EmbeddingSite
from auditor.similarity.files import similarity_frames, write_embeddings

__all__ = ["ATTACHED", "Loaded", "Results", "write_run_folder"]


@dataclass(frozen=True)
class Loaded:
    """What the audit runs on: the model, its data and how one meets the other."""

    device: torch.device
    model: LoadedModel
    dataset: Dataset
    preprocessing: Preprocessing
    kind: OutputKind
    profile: ArchitectureProfile
    layer: str | None
    concepts: ConceptData
    site: EmbeddingSite | None
    train: Dataset | None


@dataclass(frozen=True)
class Results:
    """What the analysis stages computed."""

    evaluation: Evaluation
    selection: Selection
    explanations: Explanations
    trust: Trust
    clinical: Clinical
    perturbed: Perturbed | None
    robustness: Robustness | None
    concepts: ConceptAnalysis
    similarity: Similarity | None
    counterfactuals: Counterfactuals | None
    metrics: dict[str, Any]
    policy: PolicyResult
    comparison: Comparison | None = None
    comparison_note: str = ""


ATTACHED = ("metrics.json", "policy.json", "predictions.csv", "trust.csv", "manifest.json")
"""The run folder's files embedded in ``report.pdf``."""


def write_run_folder(
    folder: Path,
    config: AuditConfig,
    loaded: Loaded,
    results: Results,
    report: ReportData,
    run: tuple[str, tuple[datetime, datetime]],
) -> None:
    """Write every file into ``folder`` (which exists and is empty): the data files and the
    HTML, then ``manifest.json`` (their hashes), then ``report.pdf`` with the evidence
    (:data:`ATTACHED`, the manifest among it) embedded, then ``SHA256SUMS`` (every file,
    the PDF included: the PDF cannot hold its own hash).

    ``run`` is the command line and the run's start and end times.
    """
    _write_data(folder, config, loaded, results)
    evaluation = results.evaluation
    html = render_html(_bound(report, folder, config.format))
    if "html" in config.format:
        (folder / "report.html").write_text(html, encoding="utf-8")
    if "md" in config.format:
        document = next((f"report.{f}" for f in ("pdf", "html") if f in config.format), None)
        markdown = render_markdown(report, loaded.profile.sha256, document)
        (folder / "summary.md").write_text(markdown, encoding="utf-8")
    manifest = manifest_document(
        folder, (config.model, loaded.profile.sha256),
        (loaded.dataset.source, evaluation.data_sha256), (run[0], config.as_dict()), run[1],
    )  # fmt: skip
    write_json(folder / "manifest.json", manifest)
    if "pdf" in config.format:
        write_pdf(html, folder, folder / "report.pdf", tuple(folder / n for n in ATTACHED))
    write_checksums(folder)


def _write_data(folder: Path, config: AuditConfig, loaded: Loaded, results: Results) -> None:
    """The data files: every CSV, JSON and array the stages produced."""
    evaluation, explanations, trust = results.evaluation, results.explanations, results.trust
    write_csv(evaluation.predictions, folder / "predictions.csv")
    write_csv(layers_frame(loaded.profile), folder / "layers.csv")
    write_csv(evaluation.excluded, folder / "excluded.csv")
    write_json(folder / "metrics.json", results.metrics)
    write_json(folder / "policy.json", policy_document(results.policy))
    (folder / "junit.xml").write_text(
        junit_xml(results.policy, f"auditor policy: {config.model.name}"), encoding="utf-8"
    )
    save_maps(explanations, folder / "explanations.npz")
    save_features(explanations, folder / "features.npz", results.concepts.maximised)
    write_csv(explanations.records, folder / "explanations.csv")
    write_csv(trust.verdicts, folder / "trust.csv")
    write_csv(trust.records, folder / "trust_records.csv")
    clinical = results.clinical
    if clinical.dependence is not None:
        write_csv(dependence_frame(clinical.dependence), folder / "dependence.csv")
    if clinical.operating is not None:
        write_csv(curves_frame(clinical.operating), folder / "curves.csv")
    if clinical.fairness is not None:
        write_csv(subgroups_frame(clinical.fairness), folder / "subgroups.csv")
    if any(f.groups for f in clinical.label_fairness):  # else every column was skipped
        write_csv(label_subgroups_frame(clinical.label_fairness), folder / "subgroups.csv")
    if any(o is not None for o in clinical.label_operating):
        curves = label_curves_frame(loaded.dataset.classes, clinical.label_operating)
        write_csv(curves, folder / "curves.csv")
    if results.robustness is not None and results.perturbed is not None:
        write_csv(robustness_frame(results.robustness), folder / "robustness.csv")
        write_csv(results.perturbed.frame, folder / "robustness_predictions.csv")
        if results.robustness.labels:
            write_csv(robustness_label_frame(results.robustness), folder / "robustness_labels.csv")
    frames = concept_frames(results.concepts)
    frames |= similarity_frames(results.similarity, evaluation.predictions)
    if results.counterfactuals is not None:
        frames["counterfactuals.csv"] = results.counterfactuals.frame
    for name, frame in frames.items():
        write_csv(frame, folder / name)
    write_embeddings(results.similarity, evaluation.embeddings, folder)
    if evaluation.intensities is not None:
        statistics = intensities_frame(evaluation.predictions, evaluation.intensities)
        write_csv(statistics, folder / "intensities.csv")
    if results.comparison is not None:
        write_json(folder / "comparison.json", comparison_document(results.comparison))


def _bound(report: ReportData, folder: Path, formats: tuple[str, ...]) -> ReportData:
    """The report whose sign-off lists the files its PDF embeds, with their SHA-256 (all
    written by now but the manifest, which comes after the HTML it hashes)."""
    if "pdf" not in formats:
        return report
    written = [n for n in ATTACHED if (folder / n).is_file()]
    return with_evidence(report, tuple((n, file_sha256(folder / n)) for n in written))
