"""The acceptance-criteria section: each declared criterion, the value read, met or not."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.compare.comparison import COMPARED
from auditor.label_criteria import named_label_meaning
from auditor.policy import DERIVED, EXIT_POLICY_FAILED, Outcome

__all__ = ["PolicyView", "policy_view"]


@dataclass(frozen=True)
class PolicyRow:
    """One criterion as the report shows it."""

    criterion: str
    meaning: str
    value: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class PolicyView:
    """The section: every criterion, and whether all were met."""

    rows: tuple[PolicyRow, ...]
    passed: bool
    n_failed: int
    exit_code: int


def _row(outcome: Outcome) -> PolicyRow:
    metric = outcome.criterion.metric
    meaning = (
        DERIVED.get(metric) or COMPARED.get(metric) or named_label_meaning(metric) or "metrics.json"
    )
    return PolicyRow(outcome.criterion.text, meaning, outcome.value, outcome.passed, outcome.reason)


def policy_view(inputs: AuditInputs) -> PolicyView | None:
    """The section, or ``None`` when no ``[policy]`` was declared."""
    result = inputs.policy
    if not result.outcomes:
        return None
    return PolicyView(
        rows=tuple(_row(o) for o in result.outcomes),
        passed=result.passed,
        n_failed=len(result.failed),
        exit_code=EXIT_POLICY_FAILED,
    )
