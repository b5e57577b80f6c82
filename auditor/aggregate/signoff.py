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
    """The sign-off page.

    Attributes:
        fields: The labels of the reviewer's rows, left blank.
        approvers: The declared approvers, each with a blank signature and date.
        document: ``(label, value)`` of the declared document id, revision and status.
        model_sha256: The audited model's SHA-256.
        evidence: ``(file, SHA-256)`` of the files embedded in the PDF, set when they are
            written (:func:`auditor.aggregate.report.with_evidence`).
    """

    fields: tuple[str, ...]
    approvers: tuple[str, ...]
    document: tuple[tuple[str, str], ...]
    model_sha256: str
    evidence: tuple[tuple[str, str], ...] = ()


def signoff_view(inputs: AuditInputs) -> SignoffView:
    """The sign-off table, the declared approvers and what the document is bound to."""
    documentation = inputs.config.documentation
    return SignoffView(
        fields=SIGNOFF_FIELDS,
        approvers=documentation.items("document", "approvers"),
        document=tuple(
            (label, value)
            for label, value in documentation.rows("document")
            if label in ("Document id", "Revision", "Status")
        ),
        model_sha256=inputs.architecture.sha256,
    )
