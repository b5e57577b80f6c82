"""The checks that recompute maps: on a randomised model, and on noisy images."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from auditor.explain import ExplainContext, Method
from auditor.explain.store import MapStore
from auditor.measure.maps import MapOrError, recompute
from auditor.measure.randomisation import CascadeStep, randomised_models
from auditor.measure.records import Records, TrustCase, TrustSettings
from auditor.measure.similarity import rank_correlation, ssim
from auditor.measure.stability import map_instability, noisy_copies

__all__ = ["randomisation_check", "stability_check"]

log = logging.getLogger(__name__)


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
        for case, result in zip(cases, results, strict=True):
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


def randomisation_check(
    context: ExplainContext,
    methods: list[Method],
    cases: list[TrustCase],
    names: tuple[str, ...],
    original: MapStore,
    steps: tuple[CascadeStep, ...],
    settings: TrustSettings,
    batch_size: int,
) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """Rank correlation and SSIM with the maps of the randomised model, per cascade step.

    Returns:
        The records, and the first case's maps at each step (keyed ``(step, method)``).
    """
    records = Records()
    example: dict[tuple[str, str], np.ndarray] = {}
    display = torch.stack([c.display for c in cases])
    targets = torch.tensor([c.target for c in cases])
    seeds = [settings.seed + c.index for c in cases]
    for step, model in randomised_models(context.model, steps, settings.seed):
        log.info("randomisation: weights redrawn down to %s", step.label)
        changed = recompute(context.with_model(model), methods, display, targets, seeds, batch_size)
        _similarity(records, cases, names, original, changed, step.label)
        for key, results in changed.items():
            if not isinstance(results[0], str):
                example[(step.label, key)] = results[0]
    return records.frame(), example


def stability_check(
    context: ExplainContext,
    methods: list[Method],
    cases: list[TrustCase],
    names: tuple[str, ...],
    original: MapStore,
    settings: TrustSettings,
    batch_size: int,
) -> pd.DataFrame:
    """Map instability of every method's map on each case."""
    records = Records()
    samples = settings.stability_samples
    noisy = torch.cat(
        [
            noisy_copies(
                c.display,
                samples,
                settings.stability_radius,
                torch.Generator().manual_seed(settings.seed + c.index),
            )
            for c in cases
        ]
    )
    targets = torch.tensor([c.target for c in cases]).repeat_interleave(samples)
    seeds = [settings.seed + c.index for c in cases for _ in range(samples)]
    log.info("stability: %d noisy copies of %d images", len(noisy), len(cases))
    changed = recompute(context, methods, noisy, targets, seeds, batch_size)
    for key, results in changed.items():
        for i, case in enumerate(cases):
            base = original.get(case, key)
            mine = results[i * samples : (i + 1) * samples]
            if base is None:
                continue
            errors = [r for r in mine if isinstance(r, str)]
            if errors:
                records.add(
                    case,
                    names[case.target],
                    key,
                    "map_instability",
                    np.nan,
                    status="failed",
                    detail=str(errors[0]),
                )
                continue
            value = map_instability(base, np.stack([np.asarray(r) for r in mine]))
            records.add(case, names[case.target], key, "map_instability", value)
    return records.frame()
