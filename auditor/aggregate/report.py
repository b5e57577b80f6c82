"""The report as views: its title page and its present sections (see :mod:`.sections`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.sections import PresentSection, present_sections
from auditor.aggregate.signoff import SignoffView
from auditor.documentation import TABLES, Documentation
from auditor.settings import named_path

__all__ = ["ReportData", "TitlePage", "build_report_data", "with_evidence"]


@dataclass(frozen=True)
class TitlePage:
    """What identifies the audited model and data (also written to ``manifest.json``).

    Attributes:
        model_name: The model file's name.
        model_path: The model file as given.
        data_source: The data set's declared name, else its folder and file name (the
            document shows no local absolute path).
        n_images: Images evaluated.
        n_excluded: Files excluded.
        declared: ``(label, value)`` of the declared model name and version, intended
            purpose and the document's id, revision, status and organisation.
        document_line: The footer's document identification ("" when none is declared).
    """

    model_name: str
    model_path: str
    model_sha256: str
    data_source: str
    data_sha256: str
    n_images: int
    n_excluded: int
    auditor_version: str
    declared: tuple[tuple[str, str], ...] = ()
    document_line: str = ""


_TITLE_FIELDS = (
    ("model-details", "name"),
    ("model-details", "version"),
    ("intended-use", "purpose"),
    ("document", "organisation"),
    ("document", "id"),
    ("document", "revision"),
    ("document", "status"),
)


def _declared(documentation: Documentation) -> tuple[tuple[str, str], ...]:
    labels = {(t, d.key): d.label for t, fields in TABLES.items() for d in fields}
    return tuple(
        (labels[key], value)
        for key in _TITLE_FIELDS
        if (value := documentation.get(*key)) is not None
    )


def _document_line(documentation: Documentation) -> str:
    identifier = documentation.get("document", "id")
    if identifier is None:
        return ""
    revision = documentation.get("document", "revision")
    return f"{identifier} rev. {revision}" if revision else identifier


@dataclass(frozen=True)
class ReportData:
    """Everything the report template shows: views only, no stage outputs.

    Attributes:
        title: The document's title.
        subject: What was audited, in one line (the PDF's subject).
        created: When the report was made (the run's end, UTC, ``YYYY-MM-DD HH:MM:SS``).
        created_iso: The same, ISO 8601 (the PDF's creation date).
        title_page: The title page.
        sections: The sections shown, in order, each with its view.
    """

    title: str
    subject: str
    created: str
    created_iso: str
    title_page: TitlePage
    sections: tuple[PresentSection, ...]


def build_report_data(inputs: AuditInputs) -> ReportData:
    """Build every view of one report (drawing its figures)."""
    evaluation = inputs.evaluation
    model = inputs.config.model
    return ReportData(
        title=f"Model audit: {model.name}",
        subject=(
            f"Audit of the image classifier {model.name} on {evaluation.metrics.n_images:,} "
            f"validation images: performance, clinical operating point, subgroups, robustness "
            f"and the trustworthiness of its explanations"
        ),
        created=inputs.finished,
        created_iso=inputs.finished.replace(" ", "T") + "Z",
        title_page=TitlePage(
            model_name=model.name,
            model_path=str(model),
            model_sha256=inputs.architecture.sha256,
            data_source=(
                inputs.config.documentation.get("data-details", "name")
                or named_path(inputs.dataset.source)
            ),
            data_sha256=evaluation.data_sha256,
            n_images=evaluation.metrics.n_images,
            n_excluded=len(evaluation.excluded),
            auditor_version=inputs.auditor_version,
            declared=_declared(inputs.config.documentation),
            document_line=_document_line(inputs.config.documentation),
        ),
        sections=present_sections(inputs),
    )


def with_evidence(report: ReportData, evidence: tuple[tuple[str, str], ...]) -> ReportData:
    """``report`` with its sign-off page listing ``evidence`` (files and their SHA-256),
    known only once the files are written."""
    sections = tuple(
        replace(s, view=replace(cast(SignoffView, s.view), evidence=evidence))
        if s.id == "signoff"
        else s
        for s in report.sections
    )
    return replace(report, sections=sections)
