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
import os
import shutil
import sys
from collections.abc import Callable
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
from auditor.errors import OutputError
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
from auditor.select import Selection, select_cases
from auditor.versions import device_name, versions

__all__ = ["run_audit"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _run_folder(out: Path, stem: str, started: datetime) -> Path:
    base = f"{stem}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = out / base, 1
    while candidate.exists() or (out / f".{candidate.name}.partial").exists():
        n += 1
        candidate = out / f"{base}-{n}"
    return candidate


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
    return _Loaded(device, model, dataset, preprocessing, kind, profile, layer, concepts)


def _analyse(config: AuditConfig, loaded: _Loaded) -> _Results:
    """Evaluate, select, explain and measure: every stage that runs the model."""
    model, dataset, preprocessing = loaded.model, loaded.dataset, loaded.preprocessing
    log.info("evaluating %d images on %s", len(dataset.samples), loaded.device)
    evaluation = evaluate(model, dataset, preprocessing, loaded.kind, config.evaluation)
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
    explanations = explain_cases(
        model,
        dataset,
        preprocessing,
        evaluation.predictions,
        selection,
        loaded.kind,
        loaded.layer,
        config.explain,
        config.batch_size,
        stages=stage_layers(loaded.profile.layers),
    )
    trust = measure_trust(
        model,
        dataset,
        preprocessing,
        evaluation.predictions,
        explanations,
        loaded.kind,
        config.trust,
        loaded.profile.layers,
        config.batch_size,
    )
    clinical = analyse_predictions(
        evaluation.predictions,
        dataset.metadata_columns,
        dataset.classes,
        config.clinical,
        config.evaluation.bootstrap,
    )
    links = shortcut_links(
        clinical.dependence, trust, explanations, evaluation.predictions["index"].tolist(),
        clinical.grouping,
    )  # fmt: skip
    clinical = dataclasses.replace(clinical, links=links)
    robustness = _robustness(perturbed, evaluation, clinical, config)
    metrics = metrics_document(evaluation, dataset.classes, trust, clinical, robustness, concepts)
    return _Results(
        evaluation, selection, explanations, trust, clinical, perturbed, robustness, concepts,
        metrics, evaluate_policy(config.policy, metrics),
    )  # fmt: skip


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
    for name, frame in concept_frames(results.concepts).items():
        write_csv(frame, folder / name)
    html = render_html(_bound(report, folder, config.format))
    if "html" in config.format:
        (folder / "report.html").write_text(html, encoding="utf-8")
    if "md" in config.format:
        markdown = render_markdown(report, loaded.profile.sha256)
        (folder / "summary.md").write_text(markdown, encoding="utf-8")
    manifest = manifest_document(
        folder,
        (config.model, loaded.profile.sha256),
        (loaded.dataset.source, evaluation.data_sha256),
        (run[0], config.as_dict()),
        run[1],
    )
    write_json(folder / "manifest.json", manifest)
    if "pdf" in config.format:
        write_pdf(html, folder, folder / "report.pdf", tuple(folder / n for n in ATTACHED))
    write_checksums(folder)


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


def _cannot_create(out: Path, error: OSError) -> OutputError:
    return OutputError(
        f"cannot create a run folder in {str(out)!r} ({error.strerror or error}); "
        f"pass --out with a writable folder"
    )


def _check_writable(out: Path) -> None:
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


def _assemble(out: Path, stem: str, started: datetime, write: Callable[[Path], None]) -> Path:
    """Create the run folder as a hidden ``.partial`` folder, ``write`` into it, rename it.

    Raises:
        OutputError: The folder cannot be created or written (nothing is kept).
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        folder = _run_folder(out, stem, started)
        partial = out / f".{folder.name}.partial"
        partial.mkdir()
    except OSError as error:
        raise _cannot_create(out, error) from None
    try:
        write(partial)
        os.replace(partial, folder)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise OutputError(
            f"writing the run folder in {str(out)!r} failed ({error.strerror or error}); "
            f"nothing was kept; check free space and permissions, then run again"
        ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder


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
    _check_writable(config.out)
    loaded = _load(config)
    results = _analyse(config, loaded)
    finished = _now()
    report = _report(config, loaded, results, command, (started, finished))
    return _assemble(
        config.out,
        config.model.stem,
        started,
        lambda folder: _write_files(
            folder, config, loaded, results, report, (command, (started, finished))
        ),
    )
