"""The stages of a multi-label audit after its evaluation.

It is run on perturbed copies of its images (:mod:`auditor.robustness`: subset accuracy,
called sets that change, each label's sensitivity and specificity). Its images are
selected and explained for every label called or missed, and the explanations' trust is
measured, as for a single-label model; the metadata dependence is tested label by label
(:mod:`auditor.multilabel.dependence`), each label's probability's calibration measured
(:mod:`auditor.multilabel.calibration`), its wrong calls counted
(:mod:`auditor.multilabel.failures`), its rates compared across metadata values
(:mod:`auditor.multilabel.fairness`) and its operating point read
(:mod:`auditor.multilabel.operating`); its embedding is analysed as a single-label
model's, its images grouped by their set of labels (:mod:`auditor.similarity`); its
units are dissected, its labels tested with TCAV on the images that have them and their
scores maximised (:mod:`auditor.concepts`, as a single-label model's classes); each
explained case's counterfactuals flip one of its label calls a search (a misclassified
image's each wrong call: :mod:`auditor.counterfactual.labels`); it is compared with the
previous audit of its model's name (:mod:`auditor.compare`: subset accuracy, each
label's rates, the labels' calls).
"""

from __future__ import annotations

import numpy as np

from auditor.checkpoint import Checkpoint
from auditor.clinical import Clinical
from auditor.clinical.failures import Failures
from auditor.clinical.groups import metadata_groups
from auditor.config import AuditConfig
from auditor.counterfactual.stage import counterfactuals
from auditor.distributed import take_over_threads
from auditor.documents import label_metrics_document
from auditor.evaluate import Evaluation
from auditor.events import stage
from auditor.history.store import RunRecord
from auditor.multilabel.calibration import label_calibration, miscalibrated
from auditor.multilabel.dependence import label_dependence
from auditor.multilabel.failures import label_failures
from auditor.multilabel.fairness import label_fairness
from auditor.multilabel.operating import label_operating
from auditor.outputs import Loaded, Results
from auditor.policy import evaluate_policy
from auditor.resample import Resampling
from auditor.robustness import perturbed_predictions, robustness_summary
from auditor.similarity.analysis import analyse_similarity
from auditor.stages import (
    compared_numbers,
    concepts_stage,
    explained,
    previous_comparison,
    selected,
)

__all__ = ["analyse_labels"]


def _label_clinical(config: AuditConfig, loaded: Loaded, evaluation: Evaluation) -> Clinical:
    """The clinical analyses of a multi-label model: the images' metadata groups, the
    resampling, the metadata dependence, the calibration, the failure modes, the
    subgroups' rates and the operating point label by label; the others did not run,
    and every view reads them as "not run"."""
    settings = config.clinical
    columns = tuple(c for c in loaded.dataset.metadata_columns if c != settings.patient_column)
    grouping = metadata_groups(
        evaluation.predictions, columns, settings.max_groups, settings.intersections
    )
    failures = Failures(settings.high_confidence, None, (), (), ())
    resampling = Resampling.of(evaluation.predictions, settings.patient_column)
    with stage("clinical") as counts:
        dependence = label_dependence(
            evaluation.predictions, grouping, loaded.dataset.classes, settings, resampling,
            config.evaluation.bootstrap,
        )  # fmt: skip
        calibration = label_calibration(
            evaluation.predictions, loaded.dataset.classes, resampling,
            config.evaluation.bootstrap, settings.seed,
        )  # fmt: skip
        counts["metadata_columns"] = len(loaded.dataset.metadata_columns)
        counts["labels_miscalibrated"] = len(miscalibrated(calibration))
        wrong = label_failures(
            evaluation.predictions, grouping, loaded.dataset.classes, settings.high_confidence
        )
        counts["confident_wrong_calls"] = len(wrong.confident)
        fairness = label_fairness(
            evaluation.predictions, grouping, loaded.dataset.classes, settings,
            config.evaluation.bootstrap, resampling,
        )  # fmt: skip
        operating = label_operating(
            evaluation.predictions, loaded.dataset.classes, _thresholds(evaluation), settings,
            config.evaluation.bootstrap, resampling,
        )  # fmt: skip
    return Clinical(
        settings, None, None, dependence, None, None, (), failures, grouping, resampling,
        label_calibration=calibration, label_failures=wrong, label_fairness=fairness,
        label_operating=operating,
    )  # fmt: skip


def _thresholds(evaluation: Evaluation) -> tuple[float, ...]:
    """Each label's threshold, as the evaluation called it."""
    if evaluation.label_metrics is None:
        raise ValueError("a multi-label evaluation without its metrics")
    return tuple(row.threshold for row in evaluation.label_metrics.labels)


def analyse_labels(
    config: AuditConfig,
    loaded: Loaded,
    evaluation: Evaluation,
    previous: tuple[RunRecord | None, str],
    checkpoint: Checkpoint,
) -> Results:
    """Run a multi-label model on perturbed images, select, explain and measure the trust
    of its explanations, and compare it with the ``previous`` audit of its name; the
    policy is judged on its ``metrics.json``
    (:func:`auditor.documents.label_metrics_document`) and the comparison."""
    classes = loaded.dataset.classes
    thresholds = np.array(_thresholds(evaluation))
    with stage("robustness") as counts:
        perturbed = checkpoint.stage("robustness", lambda: perturbed_predictions(
            loaded.model, loaded.dataset, loaded.preprocessing, loaded.kind,
            evaluation.predictions, config.robustness, None, thresholds,
        ))  # fmt: skip
        counts["perturbed_predictions"] = 0 if perturbed is None else len(perturbed.frame)
    concepts = concepts_stage(config, loaded, evaluation, checkpoint)
    selection = selected(config, loaded, evaluation)
    explanations, trust = explained(config, loaded, evaluation, selection, checkpoint)
    take_over_threads()  # a sharded run's other ranks have stopped
    clinical = _label_clinical(config, loaded, evaluation)
    robustness = None if perturbed is None else robustness_summary(
        perturbed, evaluation.predictions, None, config.clinical.threshold, clinical.resampling,
        config.evaluation.bootstrap, config.clinical.min_group_size, classes,
    )  # fmt: skip
    with stage("similarity") as counts:
        similarity = checkpoint.stage("similarity", lambda: analyse_similarity(
            loaded.model, loaded.preprocessing, evaluation, loaded.site, loaded.train,
            clinical.grouping, selection, config.similarity,
        ))  # fmt: skip
        counts["embeddings"] = 0 if evaluation.embeddings is None else evaluation.embeddings.rows
    with stage("counterfactuals") as counts:
        changed = checkpoint.stage("counterfactuals", lambda: counterfactuals(
            loaded.model, loaded.dataset, loaded.preprocessing, evaluation.predictions,
            selection, loaded.kind, loaded.concepts, config.counterfactuals,
            config.explain.superpixels, trust.shortcuts, tuple(thresholds.tolist()),
        ))  # fmt: skip
        counts["images"] = 0 if changed is None else len(changed.frame)
    metrics = label_metrics_document(
        evaluation, classes, trust, clinical, robustness, (concepts, changed), similarity
    )
    comparison, note = previous_comparison(
        config, loaded, previous, (evaluation, explanations, trust), metrics
    )
    policy = evaluate_policy(config.policy, metrics, compared_numbers(comparison, note))
    return Results(
        evaluation, selection, explanations, trust, clinical,
        perturbed, robustness, concepts, similarity, changed, metrics, policy,
        comparison, note,
    )  # fmt: skip
