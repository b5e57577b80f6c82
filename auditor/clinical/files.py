"""The clinical analyses in the run folder: ``curves.csv``, ``subgroups.csv``,
``dependence.csv`` and their parts of ``metrics.json`` (``operating_point``, ``curves``,
``fairness``, ``metadata_dependence``)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import numpy as np
import pandas as pd

from auditor.clinical.dependence import Dependence, GroupRate
from auditor.clinical.fairness import Fairness
from auditor.clinical.link import ShortcutLink
from auditor.clinical.operating import FPR_GRID, RECALL_GRID, Operating
from auditor.clinical.rates import Rate

__all__ = [
    "curves_document",
    "curves_frame",
    "dependence_document",
    "dependence_frame",
    "fairness_document",
    "label_curves_frame",
    "label_operating_document",
    "label_subgroups_frame",
    "operating_document",
    "subgroups_frame",
    "triple",
]


def dependence_frame(dependence: Dependence) -> pd.DataFrame:
    """``dependence.csv``: one row per (column, target, true class, value) group (its
    header alone when every column was skipped)."""
    names = [f.name for f in fields(GroupRate)]
    return pd.DataFrame([asdict(rate) for rate in dependence.rates], columns=names)


def curves_frame(operating: Operating) -> pd.DataFrame:
    """``curves.csv``: the ROC curve (``fpr``, ``tpr`` at each ``threshold``), its band on a
    grid of false-positive rates (``band_low``, ``band_high``), the precision-recall curve
    (``recall``, ``precision``; its last point has no threshold) and its band on a grid of
    recalls, and the decision curve
    (net benefit of the ``model``, of ``treat_all`` and ``treat_none`` per threshold)."""
    fpr, tpr, cuts = operating.roc
    roc = pd.DataFrame({"curve": "roc", "threshold": cuts, "fpr": fpr, "tpr": tpr})
    band = pd.DataFrame(
        {"curve": "roc_band", "fpr": FPR_GRID, "band_low": operating.band[0],
         "band_high": operating.band[1]}
    )  # fmt: skip
    precision, recall, pr_cuts = operating.pr
    pr = pd.DataFrame(
        {"curve": "pr", "threshold": np.r_[pr_cuts, np.nan], "recall": recall,
         "precision": precision}
    )  # fmt: skip
    pr_band = pd.DataFrame(
        {"curve": "pr_band", "recall": RECALL_GRID, "band_low": operating.pr_band[0],
         "band_high": operating.pr_band[1]}
    )  # fmt: skip
    decision = operating.decision.assign(curve="decision")
    return pd.concat([roc, band, pr, pr_band, decision], ignore_index=True)


def label_curves_frame(
    names: tuple[str, ...], operating: tuple[Operating | None, ...]
) -> pd.DataFrame:
    """A multi-label model's ``curves.csv``: :func:`curves_frame` of every label with an
    operating point, with its ``label`` first."""
    frames = [
        curves_frame(o).assign(label=name)
        for name, o in zip(names, operating, strict=True)
        if o is not None
    ]
    curves = pd.concat(frames, ignore_index=True)
    return curves[["label", *(c for c in curves.columns if c != "label")]]


def label_operating_document(
    names: tuple[str, ...], operating: tuple[Operating | None, ...]
) -> list[dict[str, Any]]:
    """``metrics.json``'s ``label_operating``: each label's threshold, PPV, NPV and
    average precision (null for a label every image has, or none). Its sensitivity,
    specificity and AUC are ``multi_label.labels``' (one interval for one quantity)."""
    return [
        {
            "label": name,
            "threshold": o.threshold if o else None,
            "ppv": _rate_document(o.ppv) if o else None,
            "npv": _rate_document(o.npv) if o else None,
            "average_precision": triple(o.average_precision) if o else None,
            "resamples": o.resamples if o else None,
        }
        for name, o in zip(names, operating, strict=True)
    ]


def _rate_document(rate: Rate) -> dict[str, Any]:
    return asdict(rate)


_GROUP_RATES = ("prevalence", "sensitivity", "specificity", "ppv", "npv", "accuracy")


def subgroups_frame(fairness: Fairness, label: bool = False) -> pd.DataFrame:
    """``subgroups.csv``: per column and value, images and each rate with its 95% CI
    and counts (``<rate>``, ``<rate>_ci_low``, ``<rate>_ci_high``, ``<rate>_hits``,
    ``<rate>_n``); the positive class's ROC ``auc`` and its ``ece`` with bootstrap CIs
    (empty for groups too few to judge or lacking a class). With ``label``, a first
    column ``label`` names the test (a multi-label model's label)."""
    rows = []
    for g in fairness.groups:
        row: dict[str, Any] = {"label": fairness.positive_class} if label else {}
        row |= {"column": g.column, "value": g.value, "n": g.n, "too_few": g.too_few}
        for name in _GROUP_RATES:
            rate = getattr(g, name)
            row |= {name: rate.value, f"{name}_ci_low": rate.ci_low,
                    f"{name}_ci_high": rate.ci_high, f"{name}_hits": rate.hits,
                    f"{name}_n": rate.n}  # fmt: skip
        for name in ("auc", "ece"):
            score = getattr(g, name)
            row |= {name: score.value if score else None,
                    f"{name}_ci_low": score.ci_low if score else None,
                    f"{name}_ci_high": score.ci_high if score else None}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def label_subgroups_frame(fairnesses: tuple[Fairness, ...]) -> pd.DataFrame:
    """A multi-label model's ``subgroups.csv``: :func:`subgroups_frame` of every label,
    with its ``label`` first."""
    return pd.concat([subgroups_frame(f, label=True) for f in fairnesses], ignore_index=True)


def fairness_document(fairness: Fairness | None) -> dict[str, Any] | None:
    """``metrics.json``'s ``fairness``: the disparities and the lowest groups."""
    if fairness is None:
        return None
    return {
        "positive_class": fairness.positive_class,
        "min_group_size": fairness.min_group_size,
        "resamples": fairness.resamples,
        "disparities": [asdict(d) for d in fairness.disparities],
        "lowest": [
            {"column": column, "measure": measure, "value": value}
            for (column, measure), value in fairness.lowest.items()
        ],
        "binned": list(fairness.binned),
        "skipped": [{"column": c, "reason": r} for c, r in fairness.skipped],
    }


def curves_document(operating: Operating | None) -> dict[str, Any] | None:
    """``metrics.json``'s ``curves``: the bands on their fixed grids and the decision curve
    (each at most 101 points; the full ROC and precision-recall curves, one point per
    distinct score, are in ``curves.csv``)."""
    if operating is None:
        return None
    decision = operating.decision
    return {
        "fpr": FPR_GRID.tolist(),
        "roc_band_low": operating.band[0].tolist(),
        "roc_band_high": operating.band[1].tolist(),
        "recall": RECALL_GRID.tolist(),
        "pr_band_low": operating.pr_band[0].tolist(),
        "pr_band_high": operating.pr_band[1].tolist(),
        "decision": {
            "threshold": decision["threshold"].tolist(),
            "model": decision["model"].tolist(),
            "treat_all": decision["treat_all"].tolist(),
        },
    }


def operating_document(operating: Operating | None) -> dict[str, Any] | None:
    """``metrics.json``'s ``operating_point`` (``None``: no positive class, or one class)."""
    if operating is None:
        return None
    return {
        "positive_class": operating.positive_class,
        "auc": {"value": operating.auc[0], "ci_low": operating.auc[1], "ci_high": operating.auc[2]},
        "average_precision": triple(operating.average_precision),
        "resamples": operating.resamples,
        "threshold": operating.threshold,
        "chosen_for": operating.chosen_for or None,
        "sensitivity": _rate_document(operating.sensitivity),
        "specificity": _rate_document(operating.specificity),
        "ppv": _rate_document(operating.ppv),
        "npv": _rate_document(operating.npv),
        "prevalence": operating.prevalence,
        "ppv_at_prevalence": triple(operating.ppv_at_prevalence),
        "npv_at_prevalence": triple(operating.npv_at_prevalence),
    }


def triple(value: tuple[float, float, float] | None) -> dict[str, float] | None:
    return None if value is None else dict(zip(("value", "ci_low", "ci_high"), value, strict=True))


def dependence_document(
    dependence: Dependence | None, links: tuple[ShortcutLink, ...] = ()
) -> dict[str, Any] | None:
    """``metrics.json``'s ``metadata_dependence`` (``None``: not computed), with each
    finding's link to a flagged shortcut."""
    if dependence is None:
        return None
    settings = dependence.settings
    return {
        "positive_class": dependence.positive_class,
        "targets": dependence.targets,
        "judged": dependence.judged,
        "settings": {
            "min_group_size": settings.min_group_size,
            "max_groups": settings.max_groups,
            "difference": settings.dependence_difference,
            "alpha": settings.dependence_alpha,
            "permutations": settings.permutations,
            "seed": settings.seed,
        },
        "columns": [asdict(column) for column in dependence.columns],
        "binned": list(dependence.binned),
        "skipped": [{"column": c, "reason": r} for c, r in dependence.skipped],
        "shortcut_links": [asdict(link) for link in links],
    }
