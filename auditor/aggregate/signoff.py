"""The sign-off section: the fields a reviewer completes."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs

__all__ = ["SignoffView", "signoff_view"]

SIGNOFF_FIELDS = (
    "Reviewer name",
    "Role",
    "Decision (accept / reject / accept with conditions)",
    "Conditions or comments",
    "Date",
    "Signature",
)


@dataclass(frozen=True)
class SignoffView:
    """The labels of the sign-off table's rows, left blank for the reviewer."""

    fields: tuple[str, ...]


def signoff_view(inputs: AuditInputs) -> SignoffView:
    """The sign-off table, the same for every audit."""
    return SignoffView(SIGNOFF_FIELDS)
