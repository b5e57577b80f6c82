"""The stages that run the model over the many images: evaluate, select, explain and
measure trust. A sharded run's ranks share them (see :mod:`auditor.distributed`);
:mod:`auditor.pipeline` runs the others on rank 0. Also the stages a single-label and a
multi-label audit share: the concepts inside the network, and the comparison with the
previous audit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from auditor.checkpoint import Checkpoint
from auditor.compare import Comparison, compare_audits, gate_values, read_audit
from auditor.compare.audits import audit_of_run
from auditor.concepts.analysis import ConceptAnalysis, analyse_concepts
from auditor.config import AuditConfig
from auditor.errors import ConfigError
from auditor.evaluate import Evaluation, evaluate
from auditor.events import stage
from auditor.explain.engine import Explanations, explain_cases
from auditor.explain.features import stage_layers
from auditor.history.identity import model_identity
from auditor.history.store import RunRecord
from auditor.measure import Trust, measure_trust
from auditor.multilabel.cases import select_label_cases
from auditor.outputs import Loaded
from auditor.precision import check_precision
from auditor.select import Selection, select_cases

__all__ = [
    "compared_numbers",
    "concepts_stage",
    "evaluation_stage",
    "explained",
    "previous_comparison",
    "selected",
    "share_stages",
]


def evaluated(config: AuditConfig, loaded: Loaded, checkpoint: Checkpoint) -> Evaluation:
    """The evaluation (its chunks saved in ``checkpoint`` as they finish), with its
    mixed-precision check against float32."""
    model, dataset, preprocessing = loaded.model, loaded.dataset, loaded.preprocessing
    evaluation = evaluate(
        model, dataset, preprocessing, loaded.kind, config.evaluation, loaded.site,
        checkpoint.memo,
    )  # fmt: skip
    checked = check_precision(
        model, dataset, preprocessing, loaded.kind, config.evaluation, evaluation.predictions
    )
    return dataclasses.replace(evaluation, precision_check=checked)


def evaluation_stage(config: AuditConfig, loaded: Loaded, checkpoint: Checkpoint) -> Evaluation:
    """The evaluate stage: :func:`evaluated`, or its result read back from ``checkpoint``."""
    with stage("evaluate") as counts:
        evaluation = checkpoint.stage("evaluate", lambda: evaluated(config, loaded, checkpoint))
        counts |= {"images": len(evaluation.predictions), "excluded": len(evaluation.excluded)}
    return evaluation


def selected(config: AuditConfig, loaded: Loaded, evaluation: Evaluation) -> Selection:
    """The images to explain: sampled, and misclassified (a multi-label model's: see
    :func:`auditor.multilabel.evaluation.select_label_cases`)."""
    classes, choose = loaded.dataset.classes, select_cases
    if loaded.dataset.multi_label:
        choose = select_label_cases
    return choose(evaluation.predictions, classes, config.explain_samples, config.seed)


def share_stages(config: AuditConfig, loaded: Loaded, checkpoint: Checkpoint) -> None:
    """A rank other than 0 of a sharded run: its share of the stages that are shared (the
    evaluation, the explanations and the trust checks; see :mod:`auditor.distributed`).
    Rank 0 runs the others and writes the run folder."""
    evaluation = evaluation_stage(config, loaded, checkpoint)
    explained(config, loaded, evaluation, selected(config, loaded, evaluation), checkpoint)


def explained(
    config: AuditConfig,
    loaded: Loaded,
    evaluation: Evaluation,
    selection: Selection,
    checkpoint: Checkpoint,
) -> tuple[Explanations, Trust]:
    """Explain the selected cases with every method, then measure the methods' trust."""
    model, dataset, preprocessing = loaded.model, loaded.dataset, loaded.preprocessing
    with stage("explain") as counts:
        explanations = checkpoint.stage("explain", lambda: explain_cases(
            model, dataset, preprocessing, evaluation.predictions, selection, loaded.kind,
            loaded.layer, config.explain, config.batch_size,
            stages=stage_layers(loaded.profile.layers), memo=checkpoint.memo,
        ))  # fmt: skip
        counts |= {"cases": len(explanations.cases), "methods": len(explanations.methods)}
    with stage("trust") as counts:
        trust = checkpoint.stage("trust", lambda: measure_trust(
            model, dataset, preprocessing, evaluation.predictions, explanations, loaded.kind,
            config.trust, loaded.profile.layers, config.batch_size, checkpoint.memo,
        ))  # fmt: skip
        counts["methods_judged"] = len(trust.verdicts)
    return explanations, trust


def concepts_stage(
    config: AuditConfig, loaded: Loaded, evaluation: Evaluation, checkpoint: Checkpoint
) -> ConceptAnalysis:
    """Network dissection of the spatial stages, TCAV and activation maximisation
    (:func:`auditor.concepts.analysis.analyse_concepts`), or read back from ``checkpoint``."""
    with stage("concepts") as counts:
        concepts = checkpoint.stage("concepts", lambda: analyse_concepts(
            loaded.model, loaded.dataset, loaded.concepts, loaded.preprocessing,
            evaluation.predictions, stage_layers(loaded.profile.layers), config.dissection,
            loaded.kind,
        ))  # fmt: skip
        counts["concepts"] = len(loaded.concepts.names)
    return concepts


def previous_comparison(
    config: AuditConfig,
    loaded: Loaded,
    previous: tuple[RunRecord | None, str],
    stages: tuple[Evaluation, Explanations, Trust],
    metrics: dict[str, Any],
) -> tuple[Comparison | None, str]:
    """This audit compared with the previous one of its model's name, or ``None`` with why
    not (``""``: there is no previous audit)."""
    run, note = previous
    if run is None:
        return None, note
    evaluation, explanations, trust = stages
    with stage("compare") as counts:
        name, version = model_identity(config.as_dict(), str(config.model))
        identity = {"model_name": name, "model_version": version,
                    "model_sha256": loaded.profile.sha256, "started": "", "folder": ""}  # fmt: skip
        current = audit_of_run(identity, metrics, evaluation, explanations, trust)
        try:
            comparison = compare_audits(
                read_audit(Path(run.folder), f"run {run.id}"), current, config.periodic,
                config.evaluation.bootstrap,
            )  # fmt: skip
        except ConfigError as error:
            counts["compared"] = "no"
            return None, f"Run {run.id} could not be compared with: {error}"
        counts["shared_images"] = comparison.shared
    return comparison, ""


def compared_numbers(
    comparison: Comparison | None, note: str
) -> dict[str, float | None] | str | None:
    """What the policy's ``compare.*`` criteria read: the comparison's numbers, or why
    there is none (``None``: no previous audit)."""
    return gate_values(comparison) if comparison is not None else note or None
