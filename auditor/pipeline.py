"""The orchestrator: calls the stages in order and writes the run folder.

load ─► profile ─► evaluate ─► select ─► explain ─► measure ─► aggregate ─► render

Everything that can fail because of the user's input fails before anything is
written. The run folder is assembled under a hidden ``.partial`` name and renamed
into place only when every file is written, so a folder with the final name is
always complete.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from auditor import __version__
from auditor.aggregate import AuditInputs, ReportData, build_report_data
from auditor.aggregate.report import with_evidence
from auditor.architecture import ArchitectureProfile, layers_frame, profile_model
from auditor.clinical import Clinical, analyse_predictions, positive_class
from auditor.clinical.groups import intersection_columns
from auditor.clinical.link import shortcut_links
from auditor.concepts.analysis import ConceptAnalysis, analyse_concepts, concept_frames
from auditor.concepts.data import ConceptData, split_concepts
from auditor.config import AuditConfig
from auditor.counterfactual.stage import Counterfactuals, counterfactuals
from auditor.data import Dataset, discover
from auditor.documents import (
    curves_frame,
    dependence_frame,
    manifest_document,
    metrics_document,
    subgroups_frame,
    write_checksums,
    write_csv,
    write_json,
)
from auditor.evaluate import Evaluation, evaluate, probe_output_kind
from auditor.explain.engine import Explanations, explain_cases
from auditor.explain.features import stage_layers
from auditor.explain.layers import target_layer
from auditor.explain.store import save_features, save_maps
from auditor.images import Preprocessing, model_preprocessing
from auditor.load import LoadedModel, OutputKind, file_sha256, load_model, resolve_device
from auditor.measure import Trust, measure_trust
from auditor.policy import PolicyResult, evaluate_policy, junit_xml, policy_document
from auditor.report.markdown import render_markdown
from auditor.report.render import render_html, write_pdf
from auditor.robustness import Perturbed, Robustness, perturbed_predictions, robustness_summary
from auditor.robustness.files import robustness_frame
from auditor.runfolder import assemble, check_writable
from auditor.select import Selection, select_cases
from auditor.similarity.analysis import Similarity, analyse_similarity
from auditor.similarity.embeddings import EmbeddingSite, embedding_site
from auditor.similarity.files import similarity_frames, write_embeddings
from auditor.versions import device_name, versions

__all__ = ["run_audit"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Loaded:
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
class _Results:
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


def _load(config: AuditConfig) -> _Loaded:
    """Load the model and data, settle the preprocessing, profile and pick the target layer."""
    device = resolve_device(config.device)
    model = load_model(config.model, device)
    dataset, concepts = split_concepts(discover(config.data, config.classes), config.dissection)
    positive_class(dataset.classes, config.clinical)  # a wrong name fails before any stage
    dataset.check_metadata_column(config.patient_column, "patient-column")
    for pair in config.clinical.intersections:
        for column in intersection_columns(pair):
            dataset.check_metadata_column(column, f"intersections {pair!r}: column")
    preprocessing = model_preprocessing(
        dataset, model.in_channels, config.image_size, config.mean, config.std, config.max_pixels
    )
    kind = probe_output_kind(model, dataset, preprocessing)
    height, width = preprocessing.size or (0, 0)  # settled by model_preprocessing
    profile = profile_model(
        model, (model.in_channels, height, width), config.batch_size, config.seed
    )
    layer = target_layer(model, profile, config.explain, kind, config.seed)
    site = embedding_site(model, config.similarity.embedding_layer)
    train = config.similarity.train_data
    train_set = discover(train, dataset.classes) if train is not None else None
    return _Loaded(
        device, model, dataset, preprocessing, kind, profile, layer, concepts, site, train_set
    )


def _analyse(config: AuditConfig, loaded: _Loaded) -> _Results:
    """Evaluate, select, explain and measure: every stage that runs the model."""
    model, dataset, preprocessing = loaded.model, loaded.dataset, loaded.preprocessing
    log.info("evaluating %d images on %s", len(dataset.samples), loaded.device)
    evaluation = evaluate(
        model, dataset, preprocessing, loaded.kind, config.evaluation, loaded.site
    )
    positive = positive_class(dataset.classes, config.clinical)
    perturbed = perturbed_predictions(
        model, dataset, preprocessing, loaded.kind, evaluation.predictions, config.robustness,
        None if positive is None else dataset.classes.index(positive),
    )  # fmt: skip
    concepts = analyse_concepts(
        model, dataset, loaded.concepts, preprocessing, evaluation.predictions,
        stage_layers(loaded.profile.layers), config.dissection, loaded.kind,
    )  # fmt: skip
    selection = select_cases(
        evaluation.predictions, dataset.classes, config.explain_samples, config.seed
    )
    explanations, trust = _explained(config, loaded, evaluation, selection)
    clinical = analyse_predictions(
        evaluation.predictions, dataset.metadata_columns, dataset.classes, config.clinical,
        config.evaluation.bootstrap,
    )  # fmt: skip
    links = shortcut_links(
        clinical.dependence, trust, explanations, evaluation.predictions["index"].tolist(),
        clinical.grouping,
    )  # fmt: skip
    clinical = dataclasses.replace(clinical, links=links)
    robustness = _robustness(perturbed, evaluation, clinical, config)
    similarity = analyse_similarity(
        model, preprocessing, evaluation, loaded.site, loaded.train, clinical.grouping,
        selection, config.similarity,
    )  # fmt: skip
    changed = counterfactuals(
        model, dataset, preprocessing, evaluation.predictions, selection, loaded.kind,
        loaded.concepts, config.counterfactuals, config.explain.superpixels, trust.shortcuts,
    )  # fmt: skip
    metrics = metrics_document(
        evaluation, dataset.classes, trust, clinical, robustness, concepts, similarity, changed
    )
    return _Results(
        evaluation, selection, explanations, trust, clinical, perturbed, robustness, concepts,
        similarity, changed, metrics, evaluate_policy(config.policy, metrics),
    )  # fmt: skip


def _explained(
    config: AuditConfig, loaded: _Loaded, evaluation: Evaluation, selection: Selection
) -> tuple[Explanations, Trust]:
    """Explain the selected cases with every method, then measure the methods' trust."""
    model, dataset, preprocessing = loaded.model, loaded.dataset, loaded.preprocessing
    explanations = explain_cases(
        model, dataset, preprocessing, evaluation.predictions, selection, loaded.kind,
        loaded.layer, config.explain, config.batch_size,
        stages=stage_layers(loaded.profile.layers),
    )  # fmt: skip
    trust = measure_trust(
        model, dataset, preprocessing, evaluation.predictions, explanations, loaded.kind,
        config.trust, loaded.profile.layers, config.batch_size,
    )  # fmt: skip
    return explanations, trust


def _robustness(
    perturbed: Perturbed | None, evaluation: Evaluation, clinical: Clinical, config: AuditConfig
) -> Robustness | None:
    """The perturbed predictions against the clean ones, at the operating threshold."""
    if perturbed is None:
        return None
    operating = clinical.operating
    return robustness_summary(
        perturbed,
        evaluation.predictions,
        clinical.positive_class,
        operating.threshold if operating is not None else config.clinical.threshold,
        clinical.resampling,
        config.evaluation.bootstrap,
        config.clinical.min_group_size,
    )


ATTACHED = ("metrics.json", "policy.json", "predictions.csv", "trust.csv", "manifest.json")
"""The run folder's files embedded in ``report.pdf``."""


def _write_files(
    folder: Path,
    config: AuditConfig,
    loaded: _Loaded,
    results: _Results,
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
        markdown = render_markdown(report, loaded.profile.sha256)
        (folder / "summary.md").write_text(markdown, encoding="utf-8")
    manifest = manifest_document(
        folder, (config.model, loaded.profile.sha256),
        (loaded.dataset.source, evaluation.data_sha256), (run[0], config.as_dict()), run[1],
    )  # fmt: skip
    write_json(folder / "manifest.json", manifest)
    if "pdf" in config.format:
        write_pdf(html, folder, folder / "report.pdf", tuple(folder / n for n in ATTACHED))
    write_checksums(folder)


def _write_data(folder: Path, config: AuditConfig, loaded: _Loaded, results: _Results) -> None:
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
    if results.robustness is not None and results.perturbed is not None:
        write_csv(robustness_frame(results.robustness), folder / "robustness.csv")
        write_csv(results.perturbed.frame, folder / "robustness_predictions.csv")
    frames = concept_frames(results.concepts)
    frames |= similarity_frames(results.similarity, evaluation.predictions)
    if results.counterfactuals is not None:
        frames["counterfactuals.csv"] = results.counterfactuals.frame
    for name, frame in frames.items():
        write_csv(frame, folder / name)
    write_embeddings(results.similarity, evaluation.embeddings, folder)


def _bound(report: ReportData, folder: Path, formats: tuple[str, ...]) -> ReportData:
    """The report whose sign-off lists the files its PDF embeds, with their SHA-256 (all
    written by now but the manifest, which comes after the HTML it hashes)."""
    if "pdf" not in formats:
        return report
    written = [n for n in ATTACHED if (folder / n).is_file()]
    return with_evidence(report, tuple((n, file_sha256(folder / n)) for n in written))


def _report(
    config: AuditConfig,
    loaded: _Loaded,
    results: _Results,
    command: str,
    times: tuple[datetime, datetime],
) -> ReportData:
    """The report's views of everything computed."""
    return build_report_data(
        AuditInputs(
            config=config,
            dataset=loaded.dataset,
            preprocessing=loaded.preprocessing,
            evaluation=results.evaluation,
            architecture=loaded.profile,
            explanations=results.explanations,
            trust=results.trust,
            clinical=results.clinical,
            robustness=results.robustness,
            concepts=results.concepts,
            similarity=results.similarity,
            counterfactuals=results.counterfactuals,
            policy=results.policy,
            selection=results.selection,
            command=command,
            versions=versions(),
            device_name=device_name(loaded.device),
            started=times[0].strftime("%Y-%m-%d %H:%M:%S"),
            finished=times[1].strftime("%Y-%m-%d %H:%M:%S"),
            auditor_version=__version__,
        )
    )


def run_audit(config: AuditConfig, command: str | None = None) -> Path:
    """Run every stage and write the run folder.

    Args:
        config: The resolved configuration.
        command: The command line to record in the report (default: ``sys.argv``).

    Returns:
        The run folder ``<out>/<model stem>-<UTC timestamp>/``.

    Raises:
        AuditError: A problem with the model, data or configuration (nothing written).
    """
    started = _now()
    command = command if command is not None else " ".join(sys.argv)
    check_writable(config.out)
    loaded = _load(config)
    results = _analyse(config, loaded)
    finished = _now()
    report = _report(config, loaded, results, command, (started, finished))
    return assemble(
        config.out,
        config.model.stem,
        started,
        lambda folder: _write_files(
            folder, config, loaded, results, report, (command, (started, finished))
        ),
    )
