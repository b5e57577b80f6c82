"""The checklist map points only at sections present, and every item names real sections."""

from __future__ import annotations

import re
from pathlib import Path

from auditor.aggregate.checklist import CHECKLIST, checklist_view, declared_fields
from auditor.aggregate.sections import SECTIONS
from auditor.documentation import TABLES, Documentation


def test_every_item_names_registered_sections() -> None:
    registered = {s.id for s in SECTIONS}
    fields = {(table, d.key) for table, declared in TABLES.items() for d in declared}
    for item in CHECKLIST:
        assert set(item.sections) <= registered, item
        assert set(declared_fields(item.declare)) <= fields, item
        assert item.sections or item.declare, f"{item.item}: neither answered nor declarable"


def test_an_absent_section_is_never_pointed_at() -> None:
    absent = {"robustness", "calibration", "label-calibration"}
    present = tuple((s.id, s.title) for s in SECTIONS if s.id not in absent)

    view = checklist_view(present, Documentation())

    pointed = {section for row in view.rows for section, _ in row.answered_by}
    assert not pointed & absent
    calibration = next(r for r in view.rows if r.item == "Calibration")
    assert calibration.answered_by == ()  # shown as not covered
    assert view.n_covered == sum(bool(r.answered_by) for r in view.rows)


def test_the_report_s_checklist_links_resolve_to_its_sections(audit: tuple[object, Path]) -> None:
    html = (audit[1] / "report.html").read_text()
    start = html.index('id="checklist"')
    table = html[start : html.index("</table>", start)]
    targets = set(re.findall(r'<a href="#([^"]+)">', table))
    ids = set(re.findall(r' id="([^"]+)"', html))

    assert targets and targets <= ids


def test_the_declared_context_answers_an_item_only_once_its_fields_are_declared() -> None:
    present = tuple((s.id, s.title) for s in SECTIONS)
    item = "Reference standard (ground truth) and who labelled it"

    undeclared = next(r for r in checklist_view(present, Documentation()).rows if r.item == item)
    declared = Documentation(
        {("data-details", "reference-standard"): "biopsy", ("data-details", "labelled-by"): "a"}
    )
    answered = next(r for r in checklist_view(present, declared).rows if r.item == item)

    assert undeclared.answered_by == ()
    assert [s for s, _ in answered.answered_by] == ["context"]
