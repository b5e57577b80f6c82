"""The report as views: page one's head and its present sections, by chapter (:mod:`.sections`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.sections import (
    PresentChapter,
    PresentSection,
    present_chapters,
    present_sections,
)
from auditor.aggregate.signoff import SignoffView
from auditor.documentation import Documentation
from auditor.settings import named_path

__all__ = ["ReportData", "TitlePage", "build_report_data", "with_evidence"]


@dataclass(frozen=True)
class TitlePage:
    """What identifies the document, the audited model and the data (page one's head and
    foot; also written to ``manifest.json``).

    Attributes:
        model_name: The model file's name.
        model_path: The model file as given.
        data_source: The data set's declared name, else its folder and file name (the
            document shows no local absolute path).
        model_title: The declared model name and version, else the file's name.
        purpose: The declared intended purpose ("" when not declared).
        organisation: The declared organisation ("").
        logo: The declared logo as a data URI ("").
        document_line: The document's id, revision and status ("" when no id is declared).
    """

    model_name: str
    model_path: str
    model_sha256: str
    data_source: str
    data_sha256: str
    auditor_version: str
    model_title: str = ""
    purpose: str = ""
    organisation: str = ""
    logo: str = ""
    document_line: str = ""


def _model_title(documentation: Documentation, file_name: str) -> str:
    name = documentation.get("model-details", "name") or file_name
    version = documentation.get("model-details", "version")
    return f"{name}, version {version}" if version else name


def _document_line(documentation: Documentation) -> str:
    identifier = documentation.get("document", "id")
    if identifier is None:
        return ""
    revision = documentation.get("document", "revision")
    status = documentation.get("document", "status")
    line = f"{identifier} rev. {revision}" if revision else identifier
    return f"{line} · {status}" if status else line


def _title_page(inputs: AuditInputs) -> TitlePage:
    evaluation, model = inputs.evaluation, inputs.config.model
    documentation = inputs.config.documentation
    return TitlePage(
        model_name=model.name,
        model_path=str(model),
        model_sha256=inputs.architecture.sha256,
        data_source=(
            documentation.get("data-details", "name") or named_path(inputs.dataset.source)
        ),
        data_sha256=evaluation.data_sha256,
        auditor_version=inputs.auditor_version,
        model_title=_model_title(documentation, model.name),
        purpose=documentation.get("intended-use", "purpose") or "",
        organisation=documentation.get("document", "organisation") or "",
        logo=documentation.logo_uri(),
        document_line=_document_line(documentation),
    )


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
        brand_css: A brand stylesheet, applied after the report's own ("" for none).
    """

    title: str
    subject: str
    created: str
    created_iso: str
    title_page: TitlePage
    sections: tuple[PresentSection, ...]
    brand_css: str = ""

    @property
    def chapters(self) -> tuple[PresentChapter, ...]:
        """The sections grouped by chapter, labelled (1, 2, … then appendices A, B, …)."""
        return present_chapters(self.sections)


def build_report_data(inputs: AuditInputs) -> ReportData:
    """Build every view of one report (drawing its figures)."""
    evaluation = inputs.evaluation
    model = inputs.config.model
    brand = inputs.config.brand_css
    return ReportData(
        title=f"Model audit: {model.name}",
        subject=(
            f"Audit of the multi-label image classifier {model.name} on "
            f"{evaluation.n_images:,} validation images: performance per label and the "
            f"trustworthiness of its explanations"
            if evaluation.label_metrics is not None
            else f"Audit of the image classifier {model.name} on {evaluation.n_images:,} "
            f"validation images: performance, clinical operating point, subgroups, robustness "
            f"and the trustworthiness of its explanations"
        ),
        created=inputs.finished,
        created_iso=inputs.finished.replace(" ", "T") + "Z",
        title_page=_title_page(inputs),
        sections=present_sections(inputs),
        brand_css=brand.read_text(encoding="utf-8") if brand is not None else "",
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
