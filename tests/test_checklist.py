"""The checklist map points only at sections present, and every item names real sections."""

from __future__ import annotations

import re
from pathlib import Path

from auditor.aggregate.checklist import CHECKLIST, checklist_view
from auditor.aggregate.sections import SECTIONS


def test_every_item_names_registered_sections() -> None:
    registered = {s.id for s in SECTIONS}
    for item in CHECKLIST:
        assert set(item.sections) <= registered, item
        assert item.sections or item.declare, f"{item.item}: neither answered nor declarable"


def test_an_absent_section_is_never_pointed_at() -> None:
    present = tuple((s.id, s.title) for s in SECTIONS if s.id not in ("robustness", "calibration"))

    view = checklist_view(present)

    pointed = {section for row in view.rows for section, _ in row.answered_by}
    assert not pointed & {"robustness", "calibration"}
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
