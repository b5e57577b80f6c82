"""Measure stage: can each method's maps be trusted for this model?

Runs on the explain stage's maps and images, and recomputes maps where a check needs
them (a randomised copy of the model, noisy copies of the images):

* randomisation (:mod:`.randomisation`) and stability (:mod:`.stability`) on the first
  ``trust-images`` explained images (their predicted class; half misclassified);
* faithfulness (:mod:`.faithfulness`), localisation (:mod:`.localisation`, where the
  data has masks), sparseness and agreement between methods on every explained map.

Every number is a row of :attr:`Trust.records` (one per image, method and measurement;
a check that could not run is a row with its status and reason); the verdicts
(:mod:`.verdicts`) and the shortcut finding (:mod:`.shortcuts`) are aggregated from
them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from auditor.architecture import LayerInfo
from auditor.checkpoint import Memo
from auditor.data import Dataset
from auditor.distributed import sharded
from auditor.explain import ExplainContext, Method
from auditor.explain.engine import Explanations
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind
from auditor.measure.budget import (
    Protocol,
    TrustPlan,
    curve_units,
    plan_text,
    plan_trust,
    shared_passes,
)
from auditor.measure.check import Curves, MapRun
from auditor.measure.checks import randomisation_check, stability_check
from auditor.measure.map_checks import agreement, load_masks
from auditor.measure.randomisation import CascadeStep, cascade
from auditor.measure.records import (
    Records,
    TrustCase,
    TrustSettings,
    first_images,
    mapped_cases,
)
from auditor.measure.registry import CHECKS
from auditor.measure.shortcuts import GroupCase, Shortcuts, find_shortcuts
from auditor.measure.verdicts import PROTOCOL_COLUMNS, verdict_table

__all__ = ["Trust", "measure_trust", "trusted_methods"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trust:
    """The trust checks' results.

    Attributes:
        settings: How they ran.
        records: One row per image, method and measurement (:data:`RECORD_DTYPES`);
            ``method`` is ``random`` for the random-ranking baseline and ``mask`` for a
            mask's share of the image (``mask_area``); ``step`` names the cascade step.
        verdicts: One row per method (see :mod:`auditor.measure.verdicts`).
        steps: The randomisation cascade.
        example: ``(step label or "original", method)`` → ``(H, W)`` map of the first
            trust image, for the report's figure; ``example_index`` names the image.
        example_index: Sample index of that image, or ``None``.
        curves: Method (and ``random``) → mean ``(deletion, insertion)`` curves ``(S + 1,)``.
        agreement: Methods × methods mean rank correlation of their maps.
        shortcuts: The shortcut finding, or ``None`` without masks.
        not_measured: Check → why it did not run.
        seconds: Check → seconds spent.
        plan: The passes planned and each method's protocol under ``trust-budget``.
    """

    settings: TrustSettings
    records: pd.DataFrame
    verdicts: pd.DataFrame
    steps: tuple[CascadeStep, ...]
    example: dict[tuple[str, str], np.ndarray] = field(repr=False)
    example_index: int | None
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    agreement: pd.DataFrame
    shortcuts: Shortcuts | None
    not_measured: dict[str, str]
    seconds: dict[str, float]
    plan: TrustPlan


@dataclass
class _Run:
    """One run of the checks: the explain stage's methods as it left them, the settings,
    where its parts are saved (``memo``), and what the checks leave as they go (record
    frames, seconds, checks that did not run)."""

    context: ExplainContext
    methods: list[Method]
    explanations: Explanations
    settings: TrustSettings
    batch_size: int
    memo: Memo | None = None
    frames: list[pd.DataFrame] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)


def _masks(
    cases: list[TrustCase], dataset: Dataset, preprocessing: Preprocessing
) -> dict[int, np.ndarray | str]:
    """The cases' masks (or why one cannot be used), where the data has masks."""
    if not dataset.has_masks:
        return {}
    paths = {s.index: (s.path, s.mask) for s in dataset.samples}
    return load_masks(cases, paths, preprocessing)


def _read_maps(
    run: _Run, cases: list[TrustCase], masks: dict[int, np.ndarray | str]
) -> tuple[MapRun, list[dict[str, np.ndarray]]]:
    """Every registered check that reads the explained maps, on every case.

    Returns:
        What the checks accumulated (the deletion and insertion curves), and each
        case's maps.
    """
    explanations = run.explanations
    clock = time.perf_counter()

    def measured(numbered: tuple[int, TrustCase]) -> tuple[list[tuple[object, ...]], Curves]:
        number, case = numbered

        def compute() -> tuple[list[tuple[object, ...]], Curves]:
            mine, records = MapRun(run.context, run.settings, masks, {}), Records()
            found = explanations.maps.of(case, explanations.ran)
            for check in CHECKS:
                check.measure_case(mine, case, explanations.classes[case.target], found, records)
            return records.rows, mine.curves

        return compute() if run.memo is None else run.memo(f"trust-maps-{number:06d}", compute)

    # one case at a time (saved as it finishes), shared among the ranks of a sharded run;
    # the curves are summed in case order, as one process sums them
    progress = tqdm(cases, desc="trust", unit="image", leave=False, disable=None)
    maps_run, records = MapRun(run.context, run.settings, masks, {}), Records()
    for rows, curves in sharded(enumerate(progress), measured):
        records.rows += rows
        for method, (deletion, insertion, _) in curves.items():
            maps_run.add_curves(method, deletion, insertion)
    run.seconds["faithfulness, localisation, sparseness"] = time.perf_counter() - clock
    run.frames.append(records.frame())
    return maps_run, [explanations.maps.of(case, explanations.ran) for case in cases]


def _note_map_checks_not_run(
    run: _Run, has_masks: bool, masks: dict[int, np.ndarray | str]
) -> None:
    """Say why faithfulness or localisation did not run (on some or all images)."""
    if run.settings.deletion_steps == 0:
        run.not_measured["faithfulness"] = "deletion-steps is 0"
    if not has_masks:
        run.not_measured["localisation"] = "the data has no region-of-interest masks"
    unusable = [reason for reason in masks.values() if isinstance(reason, str)]
    if unusable:
        run.not_measured["localisation on some images"] = (
            f"{len(unusable)} of {len(masks)} masks could not be used, e.g. {unusable[0]}; "
            f"see trust_records.csv"
        )


def _plan(
    run: _Run, cases: list[TrustCase], chosen: list[TrustCase], steps: tuple[CascadeStep, ...]
) -> TrustPlan:
    """Each method's protocol under ``trust-budget``, counted before any check runs."""
    explanations, settings = run.explanations, run.settings
    readers, shared = shared_passes(run.methods)
    map_checks = sum(
        curve_units(len(explanations.maps.of(c, explanations.ran)), settings.deletion_steps)
        for c in cases
    )
    plan = plan_trust(
        settings.trust_budget,
        Protocol(len(chosen), len(steps), settings.stability_samples),
        {d.key: d.passes for d in explanations.methods if d.key in explanations.ran},
        readers,
        shared,
        len(cases),
        map_checks,
    )
    log.info("trust plan: %s", plan_text(plan))
    return plan


def _randomisation(
    run: _Run, chosen: list[TrustCase], steps: tuple[CascadeStep, ...], plan: TrustPlan
) -> dict[tuple[str, str], np.ndarray]:
    """The randomisation check on ``chosen``: the example maps."""
    explanations = run.explanations
    if not steps:
        run.not_measured["randomisation"] = (
            "the model has no parameters to randomise (a frozen TorchScript model keeps "
            "its weights as constants)"
        )
        return {}
    clock = time.perf_counter()
    frame, example = randomisation_check(
        run.context,
        run.methods,
        chosen,
        explanations.classes,
        explanations.maps,
        steps,
        run.settings,
        run.batch_size,
        plan.protocols,
        run.memo,
    )
    run.frames.append(frame)
    run.seconds["randomisation"] = time.perf_counter() - clock
    original = explanations.maps.of(chosen[0], explanations.ran)
    example.update({("original", key): value for key, value in original.items()})
    return example


def _stability(run: _Run, chosen: list[TrustCase], plan: TrustPlan) -> None:
    """Map instability of the maps of ``chosen`` under small noise."""
    explanations = run.explanations
    clock = time.perf_counter()
    run.frames.append(
        stability_check(
            run.context,
            run.methods,
            chosen,
            explanations.classes,
            explanations.maps,
            run.settings,
            run.batch_size,
            plan.protocols,
            run.memo,
        )
    )
    run.seconds["stability"] = time.perf_counter() - clock


def _recomputing_checks(
    run: _Run, chosen: list[TrustCase], steps: tuple[CascadeStep, ...], plan: TrustPlan
) -> dict[tuple[str, str], np.ndarray]:
    """Randomisation and stability on ``chosen``, or why they did not run."""
    if not chosen:
        no_images = run.settings.trust_images == 0
        reason = "trust-images is 0" if no_images else "no map was computed"
        run.not_measured["randomisation"] = run.not_measured["stability"] = reason
        return {}
    example = _randomisation(run, chosen, steps, plan)
    _stability(run, chosen, plan)
    return example


def measure_trust(
    model: LoadedModel,
    dataset: Dataset,
    preprocessing: Preprocessing,
    predictions: pd.DataFrame,
    explanations: Explanations,
    kind: OutputKind,
    settings: TrustSettings,
    layers: tuple[LayerInfo, ...],
    batch_size: int,
    memo: Memo | None = None,
) -> Trust:
    """Run every trust check on the explained maps and aggregate the verdicts.

    Args:
        model: The audited model (randomised only as a copy).
        dataset: The data (its masks, where it has them).
        preprocessing: How images became model inputs (masks follow it).
        predictions: The evaluate stage's predictions (labels and predictions).
        explanations: The explain stage's output: its cases, maps, images, settings and
            the state its methods ran in (maps are recomputed with the same).
        kind: How the model's output is read.
        settings: The checks' settings.
        layers: The architecture profile's layers (their execution order orders the
            randomisation cascade).
        batch_size: Cases per batch when maps are recomputed.
        memo: Saves each case's map checks and each batch of recomputed maps as it
            finishes (and reads them back when a resumed run finds them saved).
    """
    context, methods = explanations.context(model, kind, preprocessing)
    run = _Run(context, methods, explanations, settings, batch_size, memo)
    cases = mapped_cases(explanations)
    chosen = first_images(cases, settings.trust_images)
    order = {layer.path: layer.order for layer in layers}
    steps = cascade(context.model, order, settings.randomisation_steps) if chosen else ()
    plan = _plan(run, cases, chosen, steps)
    masks = _masks(cases, dataset, preprocessing)
    maps_run, per_case = _read_maps(run, cases, masks)
    _note_map_checks_not_run(run, dataset.has_masks, masks)
    example = _recomputing_checks(run, chosen, steps, plan)
    records = pd.concat(run.frames, ignore_index=True)
    verdicts = _verdicts(records, explanations.ran, steps, settings, plan)
    return Trust(
        settings=settings,
        records=records,
        verdicts=verdicts,
        steps=steps,
        example=example,
        example_index=chosen[0].index if chosen and steps else None,
        curves=maps_run.mean_curves(),
        agreement=agreement(per_case, explanations.ran),
        shortcuts=_shortcuts(cases, masks, predictions, explanations, verdicts, settings)
        if dataset.has_masks
        else None,
        not_measured=run.not_measured,
        seconds=run.seconds,
        plan=plan,
    )


def _verdicts(
    records: pd.DataFrame,
    methods: tuple[str, ...],
    steps: tuple[CascadeStep, ...],
    settings: TrustSettings,
    plan: TrustPlan,
) -> pd.DataFrame:
    """The verdict table, with each method's protocol (the images, cascade steps and noisy
    copies its randomisation and stability checks ran on)."""
    table = verdict_table(
        records,
        methods,
        steps[-1].label if steps else None,
        settings.randomisation_threshold,
        settings.instability_threshold,
        settings.seed,
    )
    protocols = [plan.protocols.get(str(key), plan.full) for key in table["method"]]
    for column in PROTOCOL_COLUMNS:
        values = [getattr(p, column.removeprefix("protocol_")) for p in protocols]
        table[column] = pd.Series(values, index=table.index, dtype=PROTOCOL_COLUMNS[column])
    return table


def trusted_methods(verdicts: pd.DataFrame) -> tuple[str, ...]:
    """Methods that do not fail randomisation and beat a random ranking, most faithful first."""
    trusted = verdicts[
        (verdicts["randomisation"] != "fails") & (verdicts["faithfulness"] == "better than random")
    ]
    return tuple(trusted.sort_values("faithfulness_gain", ascending=False)["method"])


def _shortcuts(
    cases: list[TrustCase],
    masks: dict[int, np.ndarray | str],
    predictions: pd.DataFrame,
    explanations: Explanations,
    verdicts: pd.DataFrame,
    settings: TrustSettings,
) -> Shortcuts:
    rows = predictions.set_index("index")
    grouped = [
        GroupCase(
            case=c,
            label=str(rows.at[c.index, "label"]),
            prediction=str(rows.at[c.index, "prediction"]),
            mask=mask,
        )
        for c in cases
        if c.role == "predicted" and not isinstance(mask := masks.get(c.index, ""), str)
    ]
    return find_shortcuts(
        grouped,
        explanations.maps,
        trusted_methods(verdicts),
        settings.shortcut_threshold,
        settings.shortcut_concentration,
        settings.shortcut_min_images,
        settings.seed,
    )
