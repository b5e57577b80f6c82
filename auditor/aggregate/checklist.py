"""The checklist map: reporting-guideline items an audit can evidence, and where.

Items of CLAIM 2024 (the Checklist for Artificial Intelligence in Medical Imaging),
TRIPOD+AI (2024) and the EU AI Act's Annex IV (technical documentation, sections 1 to 3 and 9)
that an audit of a trained model on a validation set can speak to, each mapped to the
report's sections that answer it, or to "not covered" with what the team must declare.
Items are named by their topic, not their number. The map is built after every other
section, from the sections actually present, so it never points at an absent one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.documentation import Documentation

__all__ = [
    "CHECKLIST",
    "ChecklistItem",
    "ChecklistRow",
    "ChecklistView",
    "checklist_view",
    "declared_fields",
]


@dataclass(frozen=True)
class ChecklistItem:
    """One guideline item: which sections answer it, and what to declare otherwise."""

    framework: str
    item: str
    sections: tuple[str, ...]
    declare: str = ""


_CLAIM = "CLAIM 2024"
_TRIPOD = "TRIPOD+AI"
_ANNEX = "EU AI Act Annex IV"

CHECKLIST: tuple[ChecklistItem, ...] = (
    ChecklistItem(
        _CLAIM,
        "Data sources and eligibility criteria",
        ("context", "data"),
        "[data-details] provenance, inclusion-criteria, exclusion-criteria",
    ),
    ChecklistItem(_CLAIM, "Data preprocessing", ("data",)),
    ChecklistItem(
        _CLAIM,
        "Reference standard (ground truth) and who labelled it",
        ("context",),
        "[data-details] reference-standard, labelled-by",
    ),
    ChecklistItem(
        _CLAIM,
        "Independence of the test data from the training data",
        ("context",),
        "[data-details] relation-to-training",
    ),
    ChecklistItem(_CLAIM, "Model description", ("model",)),
    ChecklistItem(_CLAIM, "Performance metrics", ("performance", "labels", "operating")),
    ChecklistItem(
        _CLAIM, "Uncertainty of the performance estimates", ("performance", "labels", "operating")
    ),
    ChecklistItem(_CLAIM, "Robustness analysis", ("robustness",)),
    ChecklistItem(
        _CLAIM, "Methods for explainability, and their validation", ("explanations", "trust")
    ),
    ChecklistItem(
        _CLAIM,
        "Failure analysis of incorrectly classified cases",
        ("failures", "label-failures", "misclassified"),
    ),
    ChecklistItem(_CLAIM, "Limitations", ("limitations",)),
    ChecklistItem(
        _TRIPOD,
        "Source of data and study dates",
        ("context", "data"),
        "[data-details] provenance, collection-dates",
    ),
    ChecklistItem(
        _TRIPOD,
        "Outcome and how it was assessed",
        ("context", "operating"),
        "[data-details] reference-standard",
    ),
    ChecklistItem(_TRIPOD, "Sample size and missing data", ("data", "excluded")),
    ChecklistItem(
        _TRIPOD,
        "Discrimination with uncertainty",
        ("operating", "performance", "labels", "label-operating"),
    ),
    ChecklistItem(_TRIPOD, "Calibration", ("calibration", "label-calibration")),
    ChecklistItem(_TRIPOD, "Clinical utility (decision curve)", ("operating",)),
    ChecklistItem(
        _TRIPOD,
        "Performance in subgroups (fairness)",
        ("subgroups", "label-subgroups", "dependence"),
    ),
    ChecklistItem(
        _TRIPOD,
        "Intended use and clinical role",
        ("context",),
        "[intended-use] purpose, users, clinical-role",
    ),
    ChecklistItem(
        _ANNEX,
        "1 General description: intended purpose, provider, version",
        ("context", "model"),
        "[model-details] name, version, owner; [intended-use] purpose",
    ),
    ChecklistItem(
        _ANNEX, "1 Software and hardware the system runs with, versions", ("reproducibility",)
    ),
    ChecklistItem(
        _ANNEX,
        "2 Development: training methods and training data",
        (),
        "[model-details] training-data, training-date (the audit sees only the trained model)",
    ),
    ChecklistItem(
        _ANNEX,
        "2 Validation and testing: metrics, robustness, discriminatory impact, logs",
        ("performance", "labels", "subgroups", "robustness", "reproducibility"),
    ),
    ChecklistItem(
        _ANNEX, "2 Human oversight measures", (), "[intended-use] clinical-role, setting"
    ),
    ChecklistItem(
        _ANNEX,
        "3 Capabilities and limitations, accuracy for specific groups",
        ("limitations", "subgroups"),
    ),
    ChecklistItem(
        _ANNEX,
        "3 Foreseeable unintended outcomes and risks",
        ("dependence", "trust", "failures"),
        "[intended-use] out-of-scope",
    ),
    ChecklistItem(
        _ANNEX,
        "9 Post-market monitoring: performance compared over time",
        ("changes",),
        "scheduled audits with a history (examples/scheduled), each compared with the last",
    ),
)
"""Every mapped item, by framework."""


@dataclass(frozen=True)
class ChecklistRow:
    """One item as the report shows it: the present sections answering it, ``(id, title)``."""

    framework: str
    item: str
    answered_by: tuple[tuple[str, str], ...]
    declare: str


@dataclass(frozen=True)
class ChecklistView:
    """The checklist map."""

    rows: tuple[ChecklistRow, ...]
    n_covered: int


_DECLARED = re.compile(r"\[([a-z-]+)\] ([a-z, -]+)")


def declared_fields(declare: str) -> tuple[tuple[str, str], ...]:
    """The documentation fields an item's ``declare`` text names: ``(table, key)``."""
    return tuple(
        (table, key.strip())
        for table, keys in _DECLARED.findall(declare)
        for key in keys.split(",")
        if key.strip()
    )


def checklist_view(
    present: tuple[tuple[str, str], ...], documentation: Documentation
) -> ChecklistView:
    """The map over the sections ``present`` (``(id, title)``, in report order). The
    declared-context section answers an item only when its fields are declared."""
    titles = dict(present)
    rows = []
    for item in CHECKLIST:
        declared = all(documentation.get(*f) is not None for f in declared_fields(item.declare))
        answered = tuple(
            (s, titles[s]) for s in item.sections if s in titles and (s != "context" or declared)
        )
        rows.append(ChecklistRow(item.framework, item.item, answered, item.declare))
    return ChecklistView(tuple(rows), sum(bool(r.answered_by) for r in rows))
