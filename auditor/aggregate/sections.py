"""The report's sections, registered once: id, title, template partial and view builder.

The table of contents, the order of the sections and the template each is rendered
with all come from :data:`SECTIONS`. Adding a section is one view module (a frozen
view dataclass and its builder), one line here, and its partial
``templates/sections/<id>.html.j2``, which reads its view as ``view``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from auditor.aggregate.calibration import calibration_view
from auditor.aggregate.cases import misclassified_view, sampled_view
from auditor.aggregate.checklist import checklist_view
from auditor.aggregate.context import context_view
from auditor.aggregate.data import data_view
from auditor.aggregate.dependence import dependence_view
from auditor.aggregate.excluded import excluded_view
from auditor.aggregate.explanations import explanations_view
from auditor.aggregate.failures import failures_view
from auditor.aggregate.features import features_view
from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.limitations import limitations_view
from auditor.aggregate.model import model_view
from auditor.aggregate.operating import operating_view
from auditor.aggregate.performance import performance_view
from auditor.aggregate.policy import policy_view
from auditor.aggregate.reproducibility import reproducibility_view
from auditor.aggregate.robustness import robustness_view
from auditor.aggregate.signoff import signoff_view
from auditor.aggregate.subgroups import subgroups_view
from auditor.aggregate.summary import summary_view
from auditor.aggregate.trust import trust_view

__all__ = ["SECTIONS", "PresentSection", "Section", "ViewBuilder", "present_sections"]

ViewBuilder = Callable[[AuditInputs], object | None]
"""Builds a section's view from the audit's inputs; ``None`` when the section is absent."""


@dataclass(frozen=True)
class Section:
    """One registered report section.

    Attributes:
        id: The HTML anchor, and the partial's file name.
        title: The heading, and the table of contents' entry.
        build: Its view builder; ``None`` for the checklist map, which is built last
            from the other sections present (:func:`checklist_view`).
    """

    id: str
    title: str
    build: ViewBuilder | None

    @property
    def partial(self) -> str:
        """The template that renders the view, relative to ``templates/``."""
        return f"sections/{self.id}.html.j2"


@dataclass(frozen=True)
class PresentSection:
    """A section this report shows, with its built view."""

    id: str
    title: str
    partial: str
    view: object


SECTIONS: tuple[Section, ...] = (
    Section("summary", "Summary", summary_view),
    Section("policy", "Acceptance criteria", policy_view),
    Section("context", "Intended use, model and data, as declared", context_view),
    Section("model", "Model identity and architecture", model_view),
    Section("data", "Data", data_view),
    Section("performance", "Performance", performance_view),
    Section("operating", "Operating point", operating_view),
    Section("calibration", "Calibration", calibration_view),
    Section("subgroups", "Subgroups", subgroups_view),
    Section("dependence", "Metadata dependence", dependence_view),
    Section("failures", "Failure modes", failures_view),
    Section("robustness", "Robustness", robustness_view),
    Section("explanations", "Explanation methods", explanations_view),
    Section("trust", "Explanation trust", trust_view),
    Section("features", "Feature visualisation", features_view),
    Section("misclassified", "Misclassified cases", misclassified_view),
    Section("sampled", "Sampled cases", sampled_view),
    Section("excluded", "Excluded files", excluded_view),
    Section("limitations", "Limitations", limitations_view),
    Section("checklist", "Checklist map", None),
    Section("reproducibility", "Reproducibility", reproducibility_view),
    Section("signoff", "Sign-off", signoff_view),
)
"""Every section, in report order."""


def present_sections(
    inputs: AuditInputs, sections: tuple[Section, ...] = SECTIONS
) -> tuple[PresentSection, ...]:
    """The sections this audit shows, in order, each with its view."""
    views = {s.id: s.build(inputs) for s in sections if s.build is not None}
    shown = tuple((s.id, s.title) for s in sections if views.get(s.id) is not None)
    present = []
    for section in sections:
        view = (
            views.get(section.id)
            if section.build is not None
            else checklist_view(shown, inputs.config.documentation)
        )
        if view is not None:
            present.append(PresentSection(section.id, section.title, section.partial, view))
    return tuple(present)
