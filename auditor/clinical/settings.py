"""The clinical analyses' settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.settings import inherited, setting

INTERSECTION = "*"
"""Joins the two columns of a declared intersection: ``site*sex``."""


def _pairs(items: tuple[str, ...]) -> str | None:
    for item in items:
        names = item.split(INTERSECTION)
        if len(names) != 2 or not all(n.strip() for n in names) or names[0] == names[1]:
            return f"{item!r} is not two different columns joined by {INTERSECTION}, e.g. site*sex"
    return None


__all__ = ["ClinicalSettings"]


@dataclass(frozen=True)
class ClinicalSettings:
    """How predictions are read as a clinical test and judged per metadata value.

    Set in the config file (flat or in its ``[clinical]`` table); ``positive-class`` and
    ``min-group-size`` also have flags. ``seed`` is the run's.
    """

    positive_class: str | None = setting(
        None,
        help="The class a positive prediction means (the finding a clinician acts on)",
        flag=True,
        default_text="the second of two classes; none for more classes",
    )
    threshold: float = setting(
        0.5,
        help="Probability of the positive class at or above which an image is called positive "
        "(for the operating point)",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
        flag=True,
    )
    target_sensitivity: float | None = setting(
        None,
        help="Instead of threshold: choose, on the audited data, the highest threshold whose "
        "sensitivity reaches this",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
        default_text="none (threshold is used)",
    )
    target_specificity: float | None = setting(
        None,
        help="Instead of threshold: choose, on the audited data, the lowest threshold whose "
        "specificity reaches this",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
        default_text="none (threshold is used)",
    )
    prevalence: float | None = setting(
        None,
        help="Prevalence of the positive class in the intended population; PPV and NPV are "
        "recomputed for it",
        unit="share",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
        default_text="none (only the audited data's)",
    )
    min_group_size: int = setting(
        10,
        help="Fewest images a group (a metadata value at one true label) needs for a "
        "finding to rest on it; smaller groups are shown as too few to judge",
        unit="images",
        minimum=1,
        flag=True,
    )
    intersections: tuple[str, ...] = setting(
        (),
        help="Pairs of metadata columns also broken down together, each written a*b (e.g. "
        "site*sex): subgroups, fairness, metadata dependence and failure modes treat each "
        "pair as one more column",
        check=_pairs,
        items="column pairs",
        default_text="none",
    )
    max_groups: int = setting(
        20,
        help="A metadata column with more values than this (numbers are binned into "
        "quartiles first) is not broken down, and the report says so",
        unit="values",
        minimum=2,
    )
    dependence_difference: float = setting(
        0.10,
        help="Smallest difference, at one true label, between two values of a metadata "
        "column in the share of positive predictions that is a finding",
        unit="share",
        minimum=0.0,
        maximum=1.0,
    )
    dependence_alpha: float = setting(
        0.05,
        help="Largest permutation p-value, step-down min-P adjusted across the metadata "
        "columns and true labels (and times the labels compared, for a multi-label model), "
        "that is a finding",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    permutations: int = setting(
        2000,
        help="Permutations of the calls within each true label for the metadata columns' "
        "p-values; the smallest adjusted p-value is one in permutations + 1 (times the labels "
        "compared, for a multi-label model), and the report says when it is above "
        "dependence-alpha",
        minimum=100,
        maximum=100_000,
    )
    high_confidence: float = setting(
        0.9,
        help="Confidence at or above which an error counts as a confident error (failure modes)",
        minimum=0.0,
        maximum=1.0,
    )
    seed: int = inherited("seed", 0)
    report_classes: int = inherited("report_classes", 20)
    patient_column: str | None = inherited("patient_column", None)
