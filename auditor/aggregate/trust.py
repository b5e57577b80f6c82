"""The views of the trust checks: verdict rows, findings in words, the section and its summary.

Everything is read from :class:`auditor.measure.Trust` records; nothing here runs the
model. A row's level is the verdict's :class:`~auditor.measure.verdicts.VerdictLevel`,
decided with the verdict's sentence in the measure stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.trust_figures import (
    agreement_figure,
    curves_figure,
    maps_figure,
    mean_maps_figure,
    method_title,
    randomisation_figure,
)
from auditor.measure import Trust, TrustSettings
from auditor.measure.budget import BACKWARD_COST, Protocol, TrustPlan, protocol_text
from auditor.measure.registry import CHECKS
from auditor.measure.shortcuts import EvidenceGroup
from auditor.measure.verdicts import VerdictLevel

__all__ = [
    "CheckCell",
    "CheckColumn",
    "GroupRow",
    "TrustRow",
    "TrustSummary",
    "TrustView",
    "trust_rows",
    "trust_summary",
    "trust_view",
]

_NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class CheckColumn:
    """A column of the verdict table: a registered check."""

    title: str
    numeric: bool


@dataclass(frozen=True)
class CheckCell:
    """One check's words for one method."""

    text: str
    numeric: bool


@dataclass(frozen=True)
class TrustRow:
    """One method's line of the verdict table, in words.

    Attributes:
        cells: One per registered check (:data:`auditor.measure.registry.CHECKS`).
        level: The verdict's level: the row's colour.
    """

    key: str
    title: str
    cells: tuple[CheckCell, ...]
    verdict: str
    level: VerdictLevel


@dataclass(frozen=True)
class GroupRow:
    """One line of "Where the evidence lies", in words."""

    label: str
    n: int
    outside: str  # share of evidence outside the region, with its CI
    area: str  # share of the image outside the region
    region: str  # where the outside evidence concentrates
    flagged: bool
    judgement: str  # "yes", "no" or "too few to judge"


@dataclass(frozen=True)
class TrustSummary:
    """What the report's summary says about the trust checks.

    Attributes:
        explained: Whether any map was checked (no image is explained with
            ``explain-samples`` 0).
        n_methods: Methods checked.
        flagged: Titles of the methods failing randomisation (:attr:`VerdictLevel.BAD`).
        readable: Titles of the methods that can be read (:attr:`VerdictLevel.GOOD`).
        weak: Titles of the methods that are weak evidence only (:attr:`VerdictLevel.WEAK`).
        unstable: The readable methods whose maps small noise moves (stability check
            failed), each as its title and map instability, ``Input × gradient (96%)``.
        instability_threshold: The map instability above which a method is unstable.
        findings: Shortcut findings, one sentence each, capitalised.
        shortcut_methods: Titles of the methods the shortcut finding reads.
        has_groups: Whether the shortcut analysis had any group of enough images to judge.
        too_few: Groups shown but not judged (fewer than ``shortcut-min-images`` images).
        min_images: ``shortcut-min-images``.
    """

    explained: bool
    n_methods: int
    flagged: tuple[str, ...]
    readable: tuple[str, ...]
    weak: tuple[str, ...]
    unstable: tuple[str, ...]
    instability_threshold: float
    findings: tuple[str, ...]
    shortcut_methods: tuple[str, ...]
    has_groups: bool
    too_few: int
    min_images: int


@dataclass(frozen=True)
class TrustView:
    """The explanation-trust section.

    Attributes:
        n_cases: Explained maps checked for faithfulness, localisation and sparseness.
        n_images: Images whose maps were recomputed (randomisation, stability).
        multi_label: Whether the model is multi-label (its images' maps recomputed are
            those of the first label each is called positive for).
        seconds: Seconds spent on every check.
        columns: The verdict table's check columns, in registry order.
        rows: One per method, in report order.
        not_measured: ``(check, reason)`` for the checks that did not run.
        n_steps: Steps of the randomisation cascade.
        settings: How the checks ran.
        example_index: Sample index of the image in :attr:`maps_figure`, or ``None``.
        shortcut_methods: Titles of the methods the shortcut analysis reads.
        groups: The shortcut analysis per class and error type.
        plan: The passes of the trust checks against the explain stage's, in words.
        full: The full protocol (images, cascade steps, noisy copies).
        within: Whether the checks fit ``trust-budget``.
        sampled: ``(method title, its protocol in words)`` for the methods whose
            randomisation and stability checks ran on a sampling of the full protocol.
    """

    n_cases: int
    n_images: int
    multi_label: bool
    seconds: float
    columns: tuple[CheckColumn, ...]
    rows: tuple[TrustRow, ...]
    not_measured: tuple[tuple[str, str], ...]
    n_steps: int
    settings: TrustSettings
    randomisation_figure: str
    maps_figure: str
    example_index: int | None
    curves_figure: str
    agreement_figure: str
    shortcut_methods: tuple[str, ...]
    groups: tuple[GroupRow, ...]
    mean_maps_figure: str
    plan: str
    full: Protocol
    within: bool
    sampled: tuple[tuple[str, str], ...]


def trust_rows(verdicts: pd.DataFrame) -> tuple[TrustRow, ...]:
    """The verdict table (``trust.csv``'s rows) in words, one row per method."""
    return tuple(
        TrustRow(
            key=str(row["method"]),
            title=method_title(str(row["method"])),
            cells=tuple(CheckCell(check.describe(row), check.numeric) for check in CHECKS),
            verdict=str(row["verdict"]),
            level=VerdictLevel(row["level"]),
        )
        for _, row in verdicts.iterrows()
    )


def _n_cases(trust: Trust) -> int:
    records = trust.records
    return len(records[records["measure"] == "gini"].drop_duplicates(["index", "role"]))


def _shortcut_methods(trust: Trust) -> tuple[str, ...]:
    shortcuts = trust.shortcuts
    return tuple(method_title(k) for k in shortcuts.methods) if shortcuts else ()


def _titles(rows: tuple[TrustRow, ...], level: VerdictLevel) -> tuple[str, ...]:
    return tuple(r.title for r in rows if r.level == level)


def _unstable(verdicts: pd.DataFrame) -> tuple[str, ...]:
    """The readable methods that failed the stability check, most unstable first."""
    unstable = verdicts[
        (verdicts["level"] == VerdictLevel.GOOD.value) & (verdicts["stability"] == "unstable")
    ].sort_values("map_instability", ascending=False, kind="stable")
    return tuple(
        f"{method_title(str(row.method))} ({row.map_instability:.0%})"
        for row in unstable.itertuples()
    )


def _capitalised(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def trust_summary(trust: Trust) -> TrustSummary:
    """The trust checks in the summary's words: who can be read, who not, shortcuts."""
    rows = trust_rows(trust.verdicts)
    shortcuts = trust.shortcuts
    return TrustSummary(
        explained=_n_cases(trust) > 0,
        n_methods=len(rows),
        flagged=_titles(rows, VerdictLevel.BAD),
        readable=_titles(rows, VerdictLevel.GOOD),
        weak=_titles(rows, VerdictLevel.WEAK),
        unstable=_unstable(trust.verdicts),
        instability_threshold=trust.settings.instability_threshold,
        findings=tuple(_capitalised(g.sentence()) for g in shortcuts.flagged) if shortcuts else (),
        shortcut_methods=_shortcut_methods(trust),
        has_groups=bool(shortcuts and any(not g.too_few for g in shortcuts.groups)),
        too_few=sum(g.too_few for g in shortcuts.groups) if shortcuts else 0,
        min_images=trust.settings.shortcut_min_images,
    )


def _group_row(group: EvidenceGroup) -> GroupRow:
    return GroupRow(
        label=group.label,
        n=group.n,
        outside=f"{group.outside[0]:.0%} ({group.outside[1]:.0%}–{group.outside[2]:.0%})",
        area=f"{group.outside_area:.0%}",
        region=(
            f"{group.region}: {group.region_share:.0%} of it in {group.region_area:.0%} of the "
            f"area ({group.concentration:.1f}×)"
        ),
        flagged=group.flagged,
        judgement="too few to judge" if group.too_few else ("yes" if group.flagged else "no"),
    )


def trust_view(inputs: AuditInputs) -> TrustView:
    """Everything the report's trust section shows."""
    trust = inputs.trust
    methods = tuple(str(k) for k in trust.verdicts["method"])
    return TrustView(
        n_cases=_n_cases(trust),
        n_images=trust.plan.full.images,
        multi_label=inputs.dataset.multi_label,
        seconds=sum(trust.seconds.values()),
        columns=tuple(CheckColumn(check.title, check.numeric) for check in CHECKS),
        rows=trust_rows(trust.verdicts),
        not_measured=tuple(trust.not_measured.items()),
        n_steps=len(trust.steps),
        settings=trust.settings,
        randomisation_figure=randomisation_figure(trust, methods) if trust.steps else "",
        maps_figure=maps_figure(trust, methods),
        example_index=trust.example_index,
        curves_figure=curves_figure(trust, methods),
        agreement_figure=agreement_figure(trust.agreement),
        shortcut_methods=_shortcut_methods(trust),
        groups=tuple(_group_row(g) for g in trust.shortcuts.groups) if trust.shortcuts else (),
        mean_maps_figure=mean_maps_figure(trust),
        plan=plan_sentence(trust.plan),
        full=trust.plan.full,
        within=trust.plan.within,
        sampled=tuple(
            (method_title(key), protocol_text(trust.plan.protocols[key], trust.plan.full))
            for key in trust.plan.sampled
        ),
    )


def plan_sentence(plan: TrustPlan) -> str:
    """The trust checks' passes against the explain stage's and the budget, in words."""
    if not plan.explain:
        return f"The trust checks were planned at {plan.total:,} forward-pass units."
    budget = (
        f"within its budget of {plan.budget:g}×"
        if plan.budget and plan.within
        else f"over its budget of {plan.budget:g}× even at the smallest protocols"
        if plan.budget
        else "with no budget (trust-budget 0)"
    )
    return (
        f"The trust checks were planned at {plan.total:,} forward-pass units (a forward+backward "
        f"pass counts {BACKWARD_COST}), {plan.ratio:.1f}× the explain stage's {plan.explain:,}: "
        f"{budget}."
        + (
            f" The full protocol would have taken {plan.full_total:,} "
            f"({plan.full_total / plan.explain:.1f}×)."
            if plan.sampled
            else ""
        )
    )
