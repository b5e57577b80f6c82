"""The report as views: its title page and its present sections (see :mod:`.sections`)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.sections import PresentSection, present_sections

__all__ = ["ReportData", "TitlePage", "build_report_data"]


@dataclass(frozen=True)
class TitlePage:
    """What identifies the audited model and data (also written to ``manifest.json``).

    Attributes:
        model_name: The model file's name.
        model_path: The model file as given.
        data_source: The data directory or manifest as given.
        n_images: Images evaluated.
        n_excluded: Files excluded.
    """

    model_name: str
    model_path: str
    model_sha256: str
    data_source: str
    data_sha256: str
    n_images: int
    n_excluded: int
    auditor_version: str


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
            data_source=str(inputs.dataset.source),
            data_sha256=evaluation.data_sha256,
            n_images=evaluation.metrics.n_images,
            n_excluded=len(evaluation.excluded),
            auditor_version=inputs.auditor_version,
        ),
        sections=present_sections(inputs),
    )
