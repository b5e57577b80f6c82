"""The TCAV section: which concepts move which class's score (see
:mod:`auditor.concepts.tcav`), and what it says about the artefact concepts."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.concepts.tcav_stage import ConceptTests, TcavRow

__all__ = ["TcavFinding", "TcavView", "artifact_tcav", "tcav_findings", "tcav_view"]


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
    """

    tests: ConceptTests
    shown: tuple[TcavRow, ...]
    findings: tuple[TcavFinding, ...]
    computed: tuple[str, ...]
    smallest_p: float
    multi_label: bool

    @property
    def noun(self) -> str:
        """What a row's target is: "class", or a multi-label model's "label"."""
        return "label" if self.multi_label else "class"


def _sentence(row: TcavRow, tests: ConceptTests) -> str:
    figures = (
        f"TCAV score {row.score:.2f} (runs {row.score_low:.2f}–{row.score_high:.2f}) against "
        f"{row.null_score:.2f} for random images seen through its regions, p = "
        f"{row.p_value:.3f} ({tests.settings.tcav_pseudo} pseudo-concepts)"
    )
    where = f"along the artefact concept {row.concept} at {tests.layer}"
    if row.significant:
        way = "more" if row.score > row.null_score else "less"
        return f"The {row.target} score rises {where} {way} often than by chance: {figures}."
    return (
        f"TCAV does not show that the {row.target} score moves {where}: {figures}, not "
        f"below {tests.settings.tcav_alpha:g}."
    )


def tcav_findings(inputs: AuditInputs) -> tuple[TcavFinding, ...]:
    """A sentence for each artefact concept and class (the positive class only, when
    there is one): flagged when the concept moves the class's score."""
    tests = inputs.concepts.tcav
    if tests is None:
        return ()
    artifacts = inputs.config.dissection.artifact_concepts
    operating = inputs.clinical.operating
    positive = operating.positive_class if operating is not None else None
    return tuple(
        TcavFinding(_sentence(row, tests), row.significant)
        for row in tests.rows
        if row.concept in artifacts and positive in (None, row.target)
    )


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
        shown=tuple(row for row in tests.rows if row.significant),
        findings=tcav_findings(inputs),
        computed=tests.settings.computed_concepts,
        smallest_p=1 / (tests.settings.tcav_pseudo + 1),
        multi_label=inputs.evaluation.output_kind.multi_label,
    )
