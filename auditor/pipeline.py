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
from datetime import UTC, datetime
from pathlib import Path

from auditor import __version__
from auditor.aggregate import AuditInputs, ReportData, build_report_data
from auditor.checkpoint import NO_CHECKPOINT, Checkpoint, open_checkpoint, run_identity
from auditor.clinical import Clinical, analyse_predictions, positive_class
from auditor.clinical.link import shortcut_links
from auditor.config import AuditConfig
from auditor.counterfactual.stage import Counterfactuals, counterfactuals
from auditor.distributed import join_world, leave_world, share, take_over_threads, world
from auditor.documents import (
    metrics_document,
)
from auditor.evaluate import Evaluation
from auditor.events import close_events, durations, emit, stage
from auditor.explain.engine import Explanations
from auditor.history.identity import config_sha256
from auditor.history.runs import previous_run, record_run
from auditor.history.store import RunRecord
from auditor.loading import load_inputs
from auditor.measure import Trust
from auditor.multilabel.stage import analyse_labels
from auditor.outputs import Loaded, Results, write_run_folder
from auditor.plan import RunPlan, announce_plan, plan_run
from auditor.policy import evaluate_policy
from auditor.robustness import Perturbed, Robustness, perturbed_predictions, robustness_summary
from auditor.runfolder import assemble, check_writable
from auditor.select import Selection
from auditor.similarity.analysis import Similarity, analyse_similarity
from auditor.stages import (
    compared_numbers,
    concepts_stage,
    evaluation_stage,
    explained,
    previous_comparison,
    selected,
    share_stages,
)
from auditor.versions import device_name, versions

__all__ = ["run_audit"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _analyse(
    config: AuditConfig,
    loaded: Loaded,
    previous: tuple[RunRecord | None, str] = (None, ""),
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> Results:
    """Evaluate, select, explain and measure: every stage that runs the model, each one's
    result saved in ``checkpoint`` as it finishes (and read from it when it is there)."""
    model, dataset, preprocessing = loaded.model, loaded.dataset, loaded.preprocessing
    evaluation = evaluation_stage(config, loaded, checkpoint)
    if dataset.multi_label:
        return analyse_labels(config, loaded, evaluation, previous, checkpoint)
    positive = positive_class(dataset.classes, config.clinical)
    with stage("robustness") as counts:
        perturbed = checkpoint.stage("robustness", lambda: perturbed_predictions(
            model, dataset, preprocessing, loaded.kind, evaluation.predictions,
            config.robustness, None if positive is None else dataset.classes.index(positive),
        ))  # fmt: skip
        counts["perturbed_predictions"] = 0 if perturbed is None else len(perturbed.frame)
    concepts = concepts_stage(config, loaded, evaluation, checkpoint)
    selection = selected(config, loaded, evaluation)
    explanations, trust = explained(config, loaded, evaluation, selection, checkpoint)
    take_over_threads()  # a sharded run's other ranks have stopped
    clinical, robustness = _clinical(config, loaded, evaluation, perturbed, (explanations, trust))
    similarity, changed = _representations(
        config, loaded, (evaluation, selection), clinical, trust, checkpoint
    )
    metrics = metrics_document(
        evaluation, dataset.classes, trust, clinical, robustness, concepts, similarity, changed
    )
    comparison, note = previous_comparison(
        config, loaded, previous, (evaluation, explanations, trust), metrics
    )
    policy = evaluate_policy(config.policy, metrics, compared_numbers(comparison, note))
    return Results(
        evaluation, selection, explanations, trust, clinical, perturbed, robustness, concepts,
        similarity, changed, metrics, policy, comparison, note,
    )  # fmt: skip


def _clinical(
    config: AuditConfig,
    loaded: Loaded,
    evaluation: Evaluation,
    perturbed: Perturbed | None,
    explained: tuple[Explanations, Trust],
) -> tuple[Clinical, Robustness | None]:
    """The clinical analysis of the predictions, linked to the explanations' shortcuts."""
    explanations, trust = explained
    with stage("clinical") as counts:
        clinical = analyse_predictions(
            evaluation.predictions, loaded.dataset.metadata_columns, loaded.dataset.classes,
            config.clinical, config.evaluation.bootstrap,
        )  # fmt: skip
        links = shortcut_links(
            clinical.dependence, trust, explanations, evaluation.predictions["index"].tolist(),
            clinical.grouping,
        )  # fmt: skip
        clinical = dataclasses.replace(clinical, links=links)
        counts["metadata_columns"] = len(loaded.dataset.metadata_columns)
    return clinical, _robustness(perturbed, evaluation, clinical, config)


def _representations(
    config: AuditConfig,
    loaded: Loaded,
    evaluated: tuple[Evaluation, Selection],
    clinical: Clinical,
    trust: Trust,
    checkpoint: Checkpoint,
) -> tuple[Similarity | None, Counterfactuals | None]:
    """The embedding's analyses and the counterfactual explanations."""
    model, preprocessing = loaded.model, loaded.preprocessing
    evaluation, selection = evaluated
    with stage("similarity") as counts:
        similarity = checkpoint.stage("similarity", lambda: analyse_similarity(
            model, preprocessing, evaluation, loaded.site, loaded.train, clinical.grouping,
            selection, config.similarity,
        ))  # fmt: skip
        counts["embeddings"] = 0 if evaluation.embeddings is None else evaluation.embeddings.rows
    with stage("counterfactuals") as counts:
        changed = checkpoint.stage("counterfactuals", lambda: counterfactuals(
            model, loaded.dataset, preprocessing, evaluation.predictions, selection,
            loaded.kind, loaded.concepts, config.counterfactuals, config.explain.superpixels,
            trust.shortcuts,
        ))  # fmt: skip
        counts["images"] = 0 if changed is None else len(changed.frame)
    return similarity, changed


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


def _where(loaded: Loaded) -> str:
    """The device in words, and the processes that shared the run (when sharded)."""
    where, shared = device_name(loaded.device), world().describe()
    return (
        f"{where}; evaluation, explanations and trust checks shared by {shared}"
        if shared
        else where
    )


def _report(
    config: AuditConfig,
    loaded: Loaded,
    results: Results,
    command: str,
    times: tuple[datetime, datetime],
    plan: RunPlan,
    resumed: tuple[str, ...] = (),
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
            comparison=results.comparison,
            comparison_note=results.comparison_note,
            selection=results.selection,
            command=command,
            versions=versions(),
            device_name=_where(loaded),
            started=times[0].strftime("%Y-%m-%d %H:%M:%S"),
            finished=times[1].strftime("%Y-%m-%d %H:%M:%S"),
            auditor_version=__version__,
            plan=plan,
            stage_seconds=durations(),
            resumed=resumed,
        )
    )


def run_audit(
    config: AuditConfig, command: str | None = None, resume: Path | None = None
) -> Path | None:
    """Run every stage and write the run folder.

    Each stage's result is saved in the partial run folder as it finishes; a run that
    stops (killed, or out of memory) keeps them, and the same command run again, or
    ``resume``, goes on from there (see :mod:`auditor.checkpoint`). Started by torchrun,
    the processes share the work (see :mod:`auditor.distributed`) and rank 0 writes the
    run folder.

    Args:
        config: The resolved configuration.
        command: The command line to record in the report (default: ``sys.argv``).
        resume: An interrupted run's partial folder to go on with (default: the newest
            in ``config.out`` with the same model, data and settings, if any).

    Returns:
        The run folder ``<out>/<model stem>-<UTC timestamp>/`` (the first start's), or
        ``None`` on the ranks other than 0 of a sharded run.

    Raises:
        AuditError: A problem with the model, data or configuration (nothing written).
    """
    if join_world(config.device).leader:
        try:
            return _lead(config, command, resume)
        finally:
            leave_world()
    close_events()  # rank 0 sends the run's events
    try:
        loaded = load_inputs(config)
        share_stages(config, loaded, share(NO_CHECKPOINT).follower())  # rank 0's checkpoint
    finally:
        leave_world()
    return None


def _lead(config: AuditConfig, command: str | None, resume: Path | None) -> Path:
    """:func:`run_audit` in one process, or in rank 0 of a sharded run."""
    started = _now()
    command = command if command is not None else " ".join(sys.argv)
    check_writable(config.out)
    emit("run_start", model=str(config.model), data=str(config.data))
    previous = previous_run(config, started.isoformat())
    with stage("load") as counts:
        loaded = load_inputs(config)
        counts |= {"images": len(loaded.dataset.samples), "layers": len(loaded.profile.layers)}
    plan = plan_run(config, loaded)
    announce_plan(plan)
    identity = run_identity(
        config_sha256(config.as_dict(), __version__), loaded.model.sha256, loaded.dataset
    )
    checkpoint = share(open_checkpoint(config.out, config.model.stem, started, identity, resume))
    started = checkpoint.started or started
    with checkpoint.kept_on_failure():
        results = _analyse(config, loaded, previous, checkpoint)
    finished = _now()
    with stage("write") as counts:
        resumed = tuple(checkpoint.resumed or ())
        report = _report(config, loaded, results, command, (started, finished), plan, resumed)
        folder = assemble(
            config.out,
            config.model.stem,
            started,
            lambda folder: write_run_folder(
                folder, config, loaded, results, report, (command, (started, finished))
            ),
            checkpoint.partial,
        )
        counts["files"] = sum(1 for path in folder.iterdir() if path.is_file())
    recorded = record_run(config, folder)
    outcome = {"policy": "passed" if results.policy.passed else "failed", "folder": str(folder)}
    if recorded is not None:
        outcome["history_run"] = str(recorded.id)
    emit("run_end", seconds=round((_now() - started).total_seconds(), 3), counts=outcome)
    return folder
