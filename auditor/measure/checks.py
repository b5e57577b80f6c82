"""The checks that recompute maps: on a randomised model, and on noisy images."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from auditor.checkpoint import Memo
from auditor.distributed import sharded
from auditor.explain import ExplainContext, Method
from auditor.explain.store import MapStore
from auditor.load import LoadedModel
from auditor.measure.budget import Protocol
from auditor.measure.maps import MapOrError, recompute
from auditor.measure.randomisation import CascadeStep, randomised_models
from auditor.measure.records import Records, TrustCase, TrustSettings
from auditor.measure.similarity import rank_correlation, ssim
from auditor.measure.stability import map_instability, noisy_copies

__all__ = ["randomisation_check", "stability_check"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Changed = tuple[str, dict[str, list[MapOrError]]]
"""A cascade step's label, and its methods' maps on the randomised model."""


def _similarity(
    records: Records,
    cases: list[TrustCase],
    names: tuple[str, ...],
    original: MapStore,
    changed: dict[str, list[MapOrError]],
    step: str,
) -> None:
    """Rank correlation and SSIM of absolute maps, original against changed."""
    for key, results in changed.items():
        for case, result in zip(cases[: len(results)], results, strict=True):
            target = names[case.target]
            base = original.get(case, key)
            if base is None:
                continue
            if isinstance(result, str) or not np.isfinite(result).all():
                detail = result if isinstance(result, str) else "the map is not finite"
                for measure in ("spearman", "ssim"):
                    records.add(case, target, key, measure, np.nan, step, "failed", detail)
                continue
            a, b = np.abs(base)[None], np.abs(result)[None]
            records.add(case, target, key, "spearman", float(rank_correlation(a, b)[0]), step)
            records.add(case, target, key, "ssim", float(ssim(a, b)[0]), step)


def _groups(methods: list[Method], keys: Mapping[str, T | None]) -> dict[T, list[Method]]:
    """The methods grouped by their key (``None`` leaves a method out), so that the
    methods of a group share their batches (and the gradient passes)."""
    groups: dict[T, list[Method]] = {}
    for method in methods:
        value = keys[method.key]
        if value is not None:
            groups.setdefault(value, []).append(method)
    return groups


def _full(methods: list[Method], images: int, steps: int, copies: int) -> dict[str, Protocol]:
    return {m.key: Protocol(images, steps, copies) for m in methods}


def randomisation_check(
    context: ExplainContext,
    methods: list[Method],
    cases: list[TrustCase],
    names: tuple[str, ...],
    original: MapStore,
    steps: tuple[CascadeStep, ...],
    settings: TrustSettings,
    batch_size: int,
    protocols: Mapping[str, Protocol] | None = None,
    memo: Memo | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """Rank correlation and SSIM with the maps of the randomised model, per cascade step.

    Each method runs on the first ``images`` cases of its protocol, at every step or
    (``steps`` 1) at the last only; without protocols, on every case at every step. With
    a ``memo``, each batch of maps is saved as it finishes, named after its step and the
    first method of its group (a resumed run still redraws every step's weights, which
    costs no pass, and computes only the batches not saved).

    Returns:
        The records, and the first case's maps at each step (keyed ``(step, method)``).
    """
    protocols = protocols or _full(methods, len(cases), len(steps), settings.stability_samples)
    display = torch.stack([c.display for c in cases])
    targets = torch.tensor([c.target for c in cases])
    seeds = [settings.seed + c.index for c in cases]

    def work(step: int) -> list[tuple[int, list[Method]]]:
        last = step == len(steps)
        images = {k: p.images if last or p.steps > 1 else None for k, p in protocols.items()}
        return list(_groups(methods, images).items())

    def run(unit: tuple[int, CascadeStep, LoadedModel, int, list[Method]]) -> Changed:
        number, step, model, n, group = unit
        log.info("randomisation: %s, weights redrawn down to %s", group[0].key, step.label)
        changed = context.with_model(model)
        name = f"trust-randomisation-{number:03d}-{group[0].key}"
        return step.label, recompute(
            changed, group, display[:n], targets[:n], seeds[:n], batch_size, memo, name
        )

    # each step's groups of methods are shared among the ranks of a sharded run; every rank
    # redraws each step in turn (the copy is randomised further in place, so a unit runs
    # before the next step is drawn: a generator, not a list) and runs its own units
    randomised = randomised_models(context.model, steps, settings.seed)
    units = (
        (number, step, model, n, group)
        for number, (step, model) in enumerate(randomised, start=1)
        for n, group in work(number)
    )
    by_step: dict[str, dict[str, list[MapOrError]]] = {step.label: {} for step in steps}
    for label, changed in sharded(units, run):
        by_step[label] |= changed
    return _compared(cases, names, original, by_step)


def _compared(
    cases: list[TrustCase],
    names: tuple[str, ...],
    original: MapStore,
    by_step: dict[str, dict[str, list[MapOrError]]],
) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """The randomised model's maps compared with the originals, step by step: the
    records, and the first case's maps at each step (keyed ``(step, method)``)."""
    records = Records()
    example: dict[tuple[str, str], np.ndarray] = {}
    for label, changed in by_step.items():
        _similarity(records, cases, names, original, changed, label)
        for key, results in changed.items():
            if not isinstance(results[0], str):
                example[(label, key)] = results[0]
    return records.frame(), example


def stability_check(
    context: ExplainContext,
    methods: list[Method],
    cases: list[TrustCase],
    names: tuple[str, ...],
    original: MapStore,
    settings: TrustSettings,
    batch_size: int,
    protocols: Mapping[str, Protocol] | None = None,
    memo: Memo | None = None,
) -> pd.DataFrame:
    """Map instability of every method's map on each case: on the first ``images`` cases
    of its protocol, from the first ``copies`` noisy copies of each (without protocols,
    every case and every copy). With a ``memo``, each batch of maps is saved as it
    finishes, named after the first method of its group."""
    records = Records()
    samples = settings.stability_samples
    protocols = protocols or _full(methods, len(cases), 1, samples)
    noisy = torch.stack(
        [
            noisy_copies(
                c.display,
                samples,
                settings.stability_radius,
                torch.Generator().manual_seed(settings.seed + c.index),
            )
            for c in cases
        ]
    )  # (cases, samples, C, H, W): a smaller protocol takes a corner of the same draws
    targets = torch.tensor([c.target for c in cases])
    log.info("stability: %d noisy copies of %d images", samples, len(cases))
    shapes = {k: (p.images, p.copies) for k, p in protocols.items()}
    for (n, copies), group in _groups(methods, shapes).items():
        changed = recompute(
            context,
            group,
            noisy[:n, :copies].flatten(0, 1),
            targets[:n].repeat_interleave(copies),
            [settings.seed + c.index for c in cases[:n] for _ in range(copies)],
            batch_size,
            memo,
            f"trust-stability-{group[0].key}",
        )
        for key, results in changed.items():
            for i, case in enumerate(cases[:n]):
                _instability(
                    records, case, names, key, original, results[i * copies : (i + 1) * copies]
                )
    return records.frame()


def _instability(
    records: Records,
    case: TrustCase,
    names: tuple[str, ...],
    key: str,
    original: MapStore,
    mine: list[MapOrError],
) -> None:
    """Record the map instability of ``key`` on ``case`` from its noisy copies' maps."""
    base = original.get(case, key)
    if base is None:
        return
    errors = [r for r in mine if isinstance(r, str)]
    if errors:
        records.add(
            case, names[case.target], key, "map_instability", np.nan, "", "failed", str(errors[0])
        )
        return
    value = map_instability(base, np.stack([np.asarray(r) for r in mine]))
    records.add(case, names[case.target], key, "map_instability", value)
