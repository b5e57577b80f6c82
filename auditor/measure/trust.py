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
import torch
from tqdm import tqdm

from auditor.architecture import LayerInfo
from auditor.data import Dataset
from auditor.explain import ExplainSettings
from auditor.explain.engine import Explanations, resume_context
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind
from auditor.measure.checks import randomisation_check, stability_check
from auditor.measure.map_checks import (
    CurveSums,
    agreement,
    case_maps,
    faithfulness_check,
    load_masks,
    localisation_check,
    sparseness_check,
)
from auditor.measure.randomisation import CascadeStep, cascade
from auditor.measure.records import Records, TrustCase, TrustSettings
from auditor.measure.shortcuts import GroupCase, Shortcuts, find_shortcuts
from auditor.measure.verdicts import verdict_table

__all__ = ["Trust", "measure_trust", "trust_cases"]

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


def trust_cases(explanations: Explanations, classes: tuple[str, ...]) -> list[TrustCase]:
    """The explained cases with at least one map, in the explain stage's order."""
    ok = explanations.records[explanations.records["status"] == "ok"]
    cases = ok.drop_duplicates(["index", "role"])
    return [
        TrustCase(
            index=int(row["index"]),
            group=str(row["group"]),
            role=str(row["role"]),
            target=classes.index(str(row["target"])),
            display=torch.from_numpy(explanations.images[int(row["index"])]).permute(2, 0, 1),
        )
        for row in cases.to_dict("records")
    ]


def _first_images(cases: list[TrustCase], n: int) -> list[TrustCase]:
    """Up to ``n`` cases of the predicted class, half of them misclassified where possible."""
    predicted = [c for c in cases if c.role == "predicted"]
    errors = [c for c in predicted if c.group == "misclassified"]
    others = [c for c in predicted if c.group != "misclassified"]
    n_errors = max(n // 2, n - len(others))
    return errors[:n_errors] + others[: n - min(n_errors, len(errors))]


def measure_trust(
    model: LoadedModel,
    dataset: Dataset,
    preprocessing: Preprocessing,
    predictions: pd.DataFrame,
    explanations: Explanations,
    kind: OutputKind,
    explain_settings: ExplainSettings,
    settings: TrustSettings,
    layers: tuple[LayerInfo, ...],
    batch_size: int,
) -> Trust:
    """Run every trust check on the explained maps and aggregate the verdicts.

    Args:
        model: The audited model (randomised only as a copy).
        dataset: The data (its masks, where it has them).
        preprocessing: How images became model inputs (masks follow it).
        predictions: The evaluate stage's predictions (labels and predictions).
        explanations: The explain stage's maps and images.
        kind: How the model's output is read.
        explain_settings: The methods' settings (as the explain stage ran them).
        settings: The checks' settings.
        layers: The architecture profile's layers (their execution order orders the
            randomisation cascade).
        batch_size: Cases per batch when maps are recomputed.
    """
    classes = dataset.classes
    context, methods = resume_context(model, kind, explain_settings, preprocessing, explanations)
    ran = tuple(m.key for m in explanations.methods)
    cases = trust_cases(explanations, classes)
    seconds: dict[str, float] = {}
    not_measured: dict[str, str] = {}
    frames: list[pd.DataFrame] = []
    records = Records()
    sums = CurveSums()
    per_case: list[dict[str, np.ndarray]] = []
    masks = (
        load_masks(cases, {s.index: (s.path, s.mask) for s in dataset.samples}, preprocessing)
        if dataset.has_masks
        else {}
    )
    clock = time.perf_counter()
    for case in tqdm(cases, desc="trust", unit="image", leave=False, disable=None):
        found = case_maps(case, explanations.maps, ran)
        target = classes[case.target]
        per_case.append(found)
        sparseness_check(case, target, found, records)
        if case.index in masks:
            localisation_check(case, target, found, masks[case.index], settings, records)
        if settings.deletion_steps > 0:
            faithfulness_check(context, case, target, found, settings, records, sums)
    seconds["faithfulness, localisation, sparseness"] = time.perf_counter() - clock
    if settings.deletion_steps == 0:
        not_measured["faithfulness"] = "deletion-steps is 0"
    if not dataset.has_masks:
        not_measured["localisation"] = "the data has no region-of-interest masks"
    unusable = [reason for reason in masks.values() if isinstance(reason, str)]
    if unusable:
        not_measured["localisation on some images"] = (
            f"{len(unusable)} of {len(masks)} masks could not be used, e.g. {unusable[0]}; "
            f"see trust_records.csv"
        )
    frames.append(records.frame())

    chosen = _first_images(cases, settings.trust_images)
    steps: tuple[CascadeStep, ...] = ()
    example: dict[tuple[str, str], np.ndarray] = {}
    if not chosen:
        reason = "trust-images is 0" if settings.trust_images == 0 else "no map was computed"
        not_measured["randomisation"] = not_measured["stability"] = reason
    else:
        order = {layer.path: layer.order for layer in layers}
        steps = cascade(model, order, settings.randomisation_steps)
        if not steps:
            not_measured["randomisation"] = (
                "the model has no parameters to randomise (a frozen TorchScript model keeps "
                "its weights as constants)"
            )
        else:
            clock = time.perf_counter()
            frame, example = randomisation_check(
                context, methods, chosen, classes, explanations.maps, steps, settings, batch_size
            )
            frames.append(frame)
            seconds["randomisation"] = time.perf_counter() - clock
            first = chosen[0]
            example.update(
                {("original", k): v for k, v in case_maps(first, explanations.maps, ran).items()}
            )
        clock = time.perf_counter()
        frames.append(
            stability_check(
                context, methods, chosen, classes, explanations.maps, settings, batch_size
            )
        )
        seconds["stability"] = time.perf_counter() - clock
    all_records = pd.concat(frames, ignore_index=True)
    verdicts = verdict_table(
        all_records,
        ran,
        steps[-1].label if steps else None,
        settings.randomisation_threshold,
        settings.sensitivity_threshold,
        settings.seed,
    )
    return Trust(
        settings=settings,
        records=all_records,
        verdicts=verdicts,
        steps=steps,
        example=example,
        example_index=chosen[0].index if chosen and steps else None,
        curves=sums.means(),
        agreement=agreement(per_case, ran),
        shortcuts=_shortcuts(cases, masks, predictions, explanations, verdicts, settings)
        if dataset.has_masks
        else None,
        not_measured=not_measured,
        seconds=seconds,
    )


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
            key=(c.index, c.role),
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
        settings.seed,
    )
