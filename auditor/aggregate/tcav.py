"""The TCAV section: which concepts move which class's score (see
:mod:`auditor.concepts.tcav`), and what it says about the artefact concepts."""

from __future__ import annotations

from dataclasses import dataclass

from statsmodels.stats.multitest import multipletests

from auditor.aggregate.inputs import AuditInputs
from auditor.concepts.tcav_stage import ConceptTests, TcavRow

__all__ = [
    "TcavFinding",
    "TcavView",
    "artifact_tcav",
    "holm_judged",
    "tcav_findings",
    "tcav_view",
]


@dataclass(frozen=True)
class TcavFinding:
    """One sentence about an artefact concept; ``flag`` when it moves a class's score."""

    text: str
    flag: bool


@dataclass(frozen=True)
class TcavView:
    """The section: the rows, the settings behind them, and the findings in words.

    Attributes:
        shown: The rows of the main body: the concepts that move a score (the artefact
            concepts have a sentence each; every row, for the appendix, is ``tests.rows``).
        multi_label: Whether each target is a label of a multi-label model.
        untested: The classes (labels) no image is of (has), so not tested.
    """

    tests: ConceptTests
    shown: tuple[TcavRow, ...]
    findings: tuple[TcavFinding, ...]
    computed: tuple[str, ...]
    smallest_p: float
    multi_label: bool
    untested: tuple[str, ...]

    @property
    def noun(self) -> str:
        """What a row's target is: "class", or a multi-label model's "label"."""
        return "label" if self.multi_label else "class"


def holm_judged(rows: list[TcavRow], alpha: float) -> list[tuple[float, bool]]:
    """Each artefact row's Holm-adjusted p-value over ``rows`` (the classes or labels and
    artefact concepts judged for page one), and whether it is a finding (below ``alpha``)."""
    if not rows:
        return []
    adjusted = multipletests([row.p_value for row in rows], method="holm")[1]
    return [(float(p), bool(p < alpha)) for p in adjusted]


def _sentence(row: TcavRow, tests: ConceptTests, judged: tuple[float, bool], tested: int) -> str:
    adjusted, flag = judged
    holm = f"; Holm-adjusted over {tested} tests: {adjusted:.3f}" if tested > 1 else ""
    figures = (
        f"TCAV score {row.score:.2f} (runs {row.score_low:.2f}–{row.score_high:.2f}) against "
        f"{row.null_score:.2f} for random images seen through its regions, p = "
        f"{row.p_value:.3f} ({tests.settings.tcav_pseudo} pseudo-concepts{holm})"
    )
    where = f"along the artefact concept {row.concept} at {tests.layer}"
    if row.target in tests.one_direction:
        return (
            f"TCAV cannot judge whether the {row.target} score moves {where}: there every "
            f"image's gradient of the score points the same way, so every direction, a "
            f"concept's or a random one's, scores 0 or 1 ({figures})."
        )
    if flag:
        way = "more" if row.score > row.null_score else "less"
        return f"The {row.target} score rises {where} {way} often than by chance: {figures}."
    return (
        f"TCAV does not show that the {row.target} score moves {where}: {figures}, not "
        f"below {tests.settings.tcav_alpha:g}."
    )


def _unreachable(tests: ConceptTests, tested: int) -> str:
    """Why no artefact row can be a finding when the smallest p-value, adjusted over the
    ``tested`` rows, cannot fall below the level ("" when it can)."""
    settings = tests.settings
    needed = settings.tcav_pseudo
    while tested / (needed + 1) >= settings.tcav_alpha:
        needed += 1
    if tested < 2 or needed == settings.tcav_pseudo:
        return ""
    return (
        f"With {settings.tcav_pseudo} pseudo-concepts the smallest p-value is "
        f"{1 / (settings.tcav_pseudo + 1):.3f}, so adjusted over the {tested} tests of an "
        f"artefact concept none can fall below {settings.tcav_alpha:g}: raise tcav-pseudo to "
        f"at least {needed} to judge them."
    )


def tcav_findings(inputs: AuditInputs) -> tuple[TcavFinding, ...]:
    """A sentence for each artefact concept and class (the positive class only, when
    there is one; a multi-label model's every label): flagged when the concept moves the
    class's score, its p-value Holm-adjusted over every such sentence; and, when no
    adjusted p-value can fall below the level, why."""
    tests = inputs.concepts.tcav
    if tests is None:
        return ()
    artifacts = inputs.config.dissection.artifact_concepts
    operating = inputs.clinical.operating
    positive = operating.positive_class if operating is not None else None
    rows = [r for r in tests.rows if r.concept in artifacts and positive in (None, r.target)]
    judged = holm_judged(rows, tests.settings.tcav_alpha)
    found = [
        TcavFinding(
            _sentence(row, tests, j, len(rows)), j[1] and row.target not in tests.one_direction
        )
        for row, j in zip(rows, judged, strict=True)
    ]
    if why := _unreachable(tests, len(rows)):
        found.append(TcavFinding(why, False))
    return tuple(found)


def artifact_tcav(inputs: AuditInputs) -> tuple[str, ...]:
    """Page one's sentences: each class (label) whose score moves along an artefact
    concept."""
    return tuple(finding.text for finding in tcav_findings(inputs) if finding.flag)


def tcav_view(inputs: AuditInputs) -> TcavView | None:
    """The section, or ``None`` when TCAV did not run."""
    tests = inputs.concepts.tcav
    if tests is None:
        return None
    return TcavView(
        tests=tests,
        shown=tuple(
            row for row in tests.rows if row.significant and row.target not in tests.one_direction
        ),
        findings=tcav_findings(inputs),
        computed=tests.settings.computed_concepts,
        smallest_p=1 / (tests.settings.tcav_pseudo + 1),
        multi_label=inputs.evaluation.output_kind.multi_label,
        untested=tuple(
            c
            for c in inputs.dataset.classes
            if tests.rows and c not in {r.target for r in tests.rows}
        ),
    )
