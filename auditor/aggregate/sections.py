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
from auditor.aggregate.changes import changes_view
from auditor.aggregate.checklist import checklist_view
from auditor.aggregate.context import context_view
from auditor.aggregate.counterfactuals import counterfactual_view
from auditor.aggregate.data import data_view
from auditor.aggregate.dependence import dependence_view
from auditor.aggregate.dissection import dissection_view
from auditor.aggregate.excluded import excluded_view
from auditor.aggregate.explanations import explanations_view
from auditor.aggregate.failures import failures_view
from auditor.aggregate.features import features_view
from auditor.aggregate.gallery import gallery_view
from auditor.aggregate.glossary import glossary_view
from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.label_calibration import label_calibration_view
from auditor.aggregate.label_failures import label_failures_view
from auditor.aggregate.label_operating import label_operating_view
from auditor.aggregate.label_subgroups import label_subgroups_view
from auditor.aggregate.labels import label_summary_view, labels_view
from auditor.aggregate.limitations import limitations_view
from auditor.aggregate.model import model_view
from auditor.aggregate.operating import operating_view
from auditor.aggregate.performance import performance_view
from auditor.aggregate.policy import policy_view
from auditor.aggregate.reproducibility import reproducibility_view
from auditor.aggregate.robustness import robustness_view
from auditor.aggregate.signoff import signoff_view
from auditor.aggregate.similarity import similarity_view
from auditor.aggregate.subgroups import subgroups_view
from auditor.aggregate.summary import summary_view
from auditor.aggregate.tcav import tcav_view
from auditor.aggregate.trust import trust_view

__all__ = [
    "CHAPTERS",
    "SECTIONS",
    "Chapter",
    "PresentChapter",
    "PresentSection",
    "Section",
    "ViewBuilder",
    "present_chapters",
    "present_sections",
]

ViewBuilder = Callable[[AuditInputs], object | None]
"""Builds a section's view from the audit's inputs; ``None`` when the section is absent."""


@dataclass(frozen=True)
class Chapter:
    """A part of the document: one or more sections under one heading.

    Attributes:
        id: The chapter heading's HTML anchor.
        title: The heading, and the table of contents' entry.
        appendix: Whether it follows the main body (lettered A, B, …).
        page_one: Whether it is page one, the answer (the document's first page).
    """

    id: str
    title: str
    appendix: bool = False
    page_one: bool = False


@dataclass(frozen=True)
class Section:
    """One registered report section.

    Attributes:
        id: The HTML anchor, and the partial's file name.
        title: The heading, and the table of contents' entry.
        build: Its view builder; ``None`` for a section that shows another section's view
            (``view_of``), and for the checklist map, which is built last from the other
            sections present (:func:`checklist_view`).
        chapter: The chapter it belongs to (:data:`CHAPTERS`).
        view_of: The section whose view it shows in another place (the appendix's detail
            of a main-body section), built once.
    """

    id: str
    title: str
    build: ViewBuilder | None
    chapter: Chapter
    view_of: str = ""

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
    chapter: Chapter


ANSWER = Chapter("answer", "Summary", page_one=True)
CRITERIA = Chapter("acceptance", "Acceptance criteria")
CHANGES = Chapter("changes-chapter", "Changes since the previous audit")
USE = Chapter("use-and-model", "Intended use and model")
DATA = Chapter("datasheet", "Data")
PERFORMANCE = Chapter("performance-chapter", "Performance at the operating point")
SUBGROUPS = Chapter("subgroups-chapter", "Subgroups and fairness")
CALIBRATION = Chapter("calibration-chapter", "Calibration")
ROBUSTNESS = Chapter("robustness-chapter", "Robustness")
EXPLANATIONS = Chapter("explanations-chapter", "Explanations")
LIMITATIONS = Chapter("limitations-chapter", "Limitations")
GALLERIES = Chapter("galleries", "Every method's maps", appendix=True)
DETAILS = Chapter("details", "Detailed tables and checks", appendix=True)
ARCHITECTURE = Chapter("architecture-chapter", "Architecture and features", appendix=True)
SETTINGS = Chapter("settings", "Settings and reproducibility", appendix=True)
GUIDELINES = Chapter("guidelines", "Checklist map", appendix=True)
GLOSSARY = Chapter("glossary-chapter", "Glossary", appendix=True)
SIGNOFF = Chapter("signoff-chapter", "Sign-off")

CHAPTERS: tuple[Chapter, ...] = (
    ANSWER, CRITERIA, CHANGES, USE, DATA, PERFORMANCE, SUBGROUPS, CALIBRATION, ROBUSTNESS,
    EXPLANATIONS, LIMITATIONS, GALLERIES, DETAILS, ARCHITECTURE, SETTINGS, GUIDELINES,
    GLOSSARY, SIGNOFF,
)  # fmt: skip
"""Every chapter, in document order: page one, the main body, the appendices, sign-off."""

SECTIONS: tuple[Section, ...] = (
    Section("summary", "Summary", summary_view, ANSWER),
    Section("label-summary", "Summary", label_summary_view, ANSWER),
    Section("policy", "Acceptance criteria", policy_view, CRITERIA),
    Section("changes", "Changes since the previous audit", changes_view, CHANGES),
    Section("context", "Intended use and model, as declared", context_view, USE),
    Section("model", "Model identity", model_view, USE),
    Section("data", "Data set", data_view, DATA),
    Section("excluded", "Excluded files", excluded_view, DATA),
    Section("performance", "Performance", performance_view, PERFORMANCE),
    Section("labels", "Performance per label", labels_view, PERFORMANCE),
    Section("operating", "Operating point", operating_view, PERFORMANCE),
    Section("label-operating", "Operating point per label", label_operating_view, PERFORMANCE),
    Section("subgroups", "Subgroups", subgroups_view, SUBGROUPS),
    Section("label-subgroups", "Subgroups per label", label_subgroups_view, SUBGROUPS),
    Section("dependence", "Metadata dependence", dependence_view, SUBGROUPS),
    Section("failures", "Failure modes", failures_view, SUBGROUPS),
    Section("label-failures", "Failure modes per label", label_failures_view, SUBGROUPS),
    Section("calibration", "Calibration", calibration_view, CALIBRATION),
    Section("label-calibration", "Calibration per label", label_calibration_view, CALIBRATION),
    Section("robustness", "Robustness", robustness_view, ROBUSTNESS),
    Section("trust", "Explanation trust", trust_view, EXPLANATIONS),
    Section("gallery", "Maps of the methods that can be read", gallery_view, EXPLANATIONS),
    Section("dissection", "Concepts inside the network", dissection_view, EXPLANATIONS),
    Section("tcav", "Concepts that move the score", tcav_view, EXPLANATIONS),
    Section("similarity", "What the model sees as similar", similarity_view, EXPLANATIONS),
    Section("counterfactuals", "What would change the call", counterfactual_view, EXPLANATIONS),
    Section("limitations", "Limitations", limitations_view, LIMITATIONS),
    Section("explanations", "Explanation methods", explanations_view, GALLERIES),
    Section("misclassified", "Misclassified cases", misclassified_view, GALLERIES),
    Section("sampled", "Sampled cases", sampled_view, GALLERIES),
    Section(
        "counterfactual-images", "Counterfactual images", None, GALLERIES, view_of="counterfactuals"
    ),
    Section(
        "neighbours",
        "Nearest neighbours of the explained cases",
        None,
        GALLERIES,
        view_of="similarity",
    ),
    Section(
        "dependence-detail", "Share called positive, per value", None, DETAILS, view_of="dependence"
    ),
    Section(
        "label-subgroups-detail",
        "Rates per label and value",
        None,
        DETAILS,
        view_of="label-subgroups",
    ),
    Section("failures-detail", "Confident errors", None, DETAILS, view_of="failures"),
    Section(
        "label-failures-detail",
        "Confident wrong label calls",
        None,
        DETAILS,
        view_of="label-failures",
    ),
    Section("calibration-detail", "Confidence bins", None, DETAILS, view_of="calibration"),
    Section("robustness-detail", "Every perturbation", None, DETAILS, view_of="robustness"),
    Section("trust-checks", "How each check came out", None, DETAILS, view_of="trust"),
    Section(
        "dissection-units", "Concepts and their best units", None, DETAILS, view_of="dissection"
    ),
    Section("tcav-rows", "Every class and concept (TCAV)", None, DETAILS, view_of="tcav"),
    Section(
        "similarity-detail",
        "Projections and near-duplicates",
        None,
        DETAILS,
        view_of="similarity",
    ),
    Section("architecture", "Modules", None, ARCHITECTURE, view_of="model"),
    Section("features", "Feature visualisation", features_view, ARCHITECTURE),
    Section("reproducibility", "Reproducibility", reproducibility_view, SETTINGS),
    Section("checklist", "Checklist map", None, GUIDELINES),
    Section("glossary", "Glossary", glossary_view, GLOSSARY),
    Section("signoff", "Sign-off", signoff_view, SIGNOFF),
)
"""Every section, in report order (grouped by chapter, in :data:`CHAPTERS`' order)."""


def present_sections(
    inputs: AuditInputs, sections: tuple[Section, ...] = SECTIONS
) -> tuple[PresentSection, ...]:
    """The sections this audit shows, in order, each with its view."""
    views = {s.id: s.build(inputs) for s in sections if s.build is not None}
    views.update({s.id: views.get(s.view_of) for s in sections if s.view_of})
    shown = tuple((s.id, s.title) for s in sections if views.get(s.id) is not None)
    present = []
    for section in sections:
        view = (
            views.get(section.id)
            if section.id in views
            else checklist_view(shown, inputs.config.documentation)
        )
        if view is not None:
            present.append(
                PresentSection(section.id, section.title, section.partial, view, section.chapter)
            )
    return tuple(present)


@dataclass(frozen=True)
class PresentChapter:
    """A chapter this report shows: its sections present, and its label.

    Attributes:
        label: "1" … for the main body, "A" … for appendices, "" for page one and sign-off.
    """

    chapter: Chapter
    label: str
    sections: tuple[PresentSection, ...]

    @property
    def titled_sections(self) -> bool:
        """Whether its sections get their own headings (more than one, or a different title)."""
        return len(self.sections) > 1 or self.sections[0].title != self.chapter.title


def present_chapters(sections: tuple[PresentSection, ...]) -> tuple[PresentChapter, ...]:
    """``sections`` grouped by chapter, in :data:`CHAPTERS`' order, each labelled."""
    chapters = []
    main, appendices = 0, 0
    for chapter in CHAPTERS:
        mine = tuple(s for s in sections if s.chapter == chapter)
        if not mine:
            continue
        if chapter.page_one or chapter is SIGNOFF:
            label = ""
        elif chapter.appendix:
            label, appendices = chr(ord("A") + appendices), appendices + 1
        else:
            main += 1
            label = str(main)
        chapters.append(PresentChapter(chapter, label, mine))
    return tuple(chapters)
