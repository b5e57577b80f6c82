"""The rendered report: PDF text, escaping, self-contained HTML, the URL fetcher, the
section registry and the rule that templates only lay out what the views computed."""

from __future__ import annotations

import hashlib
import html as html_module
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import pandas as pd
import pytest
from click.testing import Result
from pypdf import PdfReader

from auditor.aggregate import SECTIONS, AuditInputs, Section, present_sections
from auditor.aggregate.sections import Chapter
from auditor.aggregate.trust import trust_rows
from auditor.measure import RECORD_DTYPES
from auditor.measure.verdicts import VERDICT_COLUMNS, VerdictLevel, verdict_table
from auditor.report.format import (
    binary_size,
    fixed,
    hundredths,
    percent,
    si,
    tenths,
    thousands,
    whole_percent,
)
from auditor.report.render import run_folder_fetcher
from auditor.resources import resource_path
from tests.helpers import XSS_CLASS

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

HEADINGS = [
    "Model audit report",
    "Findings",
    "Contents",
    "1. Intended use and model",
    "Model identity",
    "2. Data",
    "Composition",
    "Duplicates",
    "3. Performance at the operating point",
    "4. Subgroups and fairness",
    "5. Calibration",
    "6. Robustness",
    "7. Explanations",
    "Explanation trust",
    "Maps of the methods that can be read",
    "8. Limitations",
    "Appendix A. Every method's maps",
    "Misclassified cases",
    "Sampled cases",
    "Appendix B. Detailed tables and checks",
    "Excluded files",
    "Reproducibility",
    "Glossary",
    "Sign-off",
]


@pytest.fixture(scope="module")
def pdf_text(audit: tuple[Result, Path]) -> list[str]:
    _, folder = audit
    return [page.extract_text() for page in PdfReader(folder / "report.pdf").pages]


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_pdf_has_every_section_and_the_model_hash(pdf_text: list[str], tiny_model: Path) -> None:
    whole = "\n".join(pdf_text)
    for title in HEADINGS:
        assert title in whole, title
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert sha in squash(whole)


def _records(rows: list[tuple[int, str, str, str, float]]) -> pd.DataFrame:
    """Trust records from ``(index, method, measure, step, value)``."""
    return pd.DataFrame(
        [(i, "predicted", "a", m, measure, step, v, "ok", "") for i, m, measure, step, v in rows],
        columns=list(RECORD_DTYPES),
    ).astype(RECORD_DTYPES)


def test_a_verdicts_level_follows_the_randomisation_rho_set_by_hand() -> None:
    """ρ of the fully randomised model at 0.8 (≥ 0.5) is BAD whatever else; at 0.2 the
    faithfulness decides between GOOD (beats a random order) and WEAK (does not)."""
    rows = []
    for i in range(8):
        rows += [
            (i, "copycat", "spearman", "all", 0.8),
            (i, "faithful", "spearman", "all", 0.2),
            (i, "unfaithful", "spearman", "all", 0.2),
            (i, "random", "deletion_auc", "", 0.5),
            (i, "random", "insertion_auc", "", 0.5),
            (i, "copycat", "deletion_auc", "", 0.1),
            (i, "copycat", "insertion_auc", "", 0.9),
            (i, "faithful", "deletion_auc", "", 0.1),
            (i, "faithful", "insertion_auc", "", 0.9),
            (i, "unfaithful", "deletion_auc", "", 0.7 + 0.01 * (i % 3)),
            (i, "unfaithful", "insertion_auc", "", 0.3),
        ]
    methods = ("copycat", "faithful", "unfaithful")
    table = verdict_table(_records(rows), methods, "all", 0.5, 0.5).set_index("method")
    assert dict(table["level"]) == {
        "copycat": VerdictLevel.BAD,
        "faithful": VerdictLevel.GOOD,
        "unfaithful": VerdictLevel.WEAK,
    }
    assert table.loc["copycat", "randomisation_spearman"] == pytest.approx(0.8)
    columns = list(VERDICT_COLUMNS)
    assert columns.index("level") == columns.index("verdict") + 1
    # The trust view takes the level as decided, whatever the sentence says.
    reworded = table.reset_index().assign(verdict="Reworded.")
    assert [row.level for row in trust_rows(reworded)] == [
        VerdictLevel.BAD,
        VerdictLevel.GOOD,
        VerdictLevel.WEAK,
    ]


def test_the_reports_accuracy_and_errors_are_recomputed_from_predictions_csv(
    audit: tuple[Result, Path], pdf_text: list[str]
) -> None:
    _, folder = audit
    predictions = pd.read_csv(folder / "predictions.csv")
    wrong = predictions["label"].astype(str) != predictions["prediction"].astype(str)
    n_errors = int(wrong.sum())
    accuracy = 1 - n_errors / len(predictions)
    whole = "\n".join(pdf_text)
    summary = squash(pdf_text[0])
    assert f"{100 * accuracy:.1f}%accuracy95%CI" in summary
    assert f";{n_errors}errors." in summary
    assert f"Evaluatedon{len(predictions)}images" in summary
    performance = squash(whole[whole.index("Performance\n", whole.index("Contents") + 1) :])
    assert f"Accuracy{100 * accuracy:.1f}%" in performance


def test_the_contents_list_the_registrys_present_sections_in_order(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    html = (folder / "report.html").read_text()
    start = html.index('<nav class="toc"')
    toc = html[start : html.index("</nav>", start)]
    entries = [
        (a, html_module.unescape(t)) for a, t in re.findall(r'<a href="#([^"]+)">([^<]+)</a>', toc)
    ]
    # This audit has metadata, masks and a convolution: every registered section is present
    # but the acceptance criteria and TCAV (it declares neither criteria nor concepts) and
    # the multi-label sections;
    # each chapter is listed, then its sections when it has several (or one titled
    # otherwise).
    absent = (
        "policy", "summary", "tcav", "tcav-rows", "changes", "label-summary", "labels",
        "label-calibration", "label-failures", "label-failures-detail", "label-subgroups",
        "label-subgroups-detail", "label-operating",
    )  # fmt: skip
    present = [s for s in SECTIONS if s.id not in absent]
    expected = []
    labels = {"main": 0, "appendix": 0}
    for chapter in dict.fromkeys(s.chapter for s in present):
        sections = [s for s in present if s.chapter == chapter]
        part = "appendix" if chapter.appendix else "main"
        labels[part] += 1
        label = (
            "" if chapter.id == "signoff-chapter"
            else f"Appendix {chr(64 + labels[part])}. " if chapter.appendix
            else f"{labels[part]}. "
        )  # fmt: skip
        expected.append((chapter.id, f"{label}{chapter.title}"))
        if len(sections) > 1 or sections[0].title != chapter.title:
            expected += [(s.id, s.title) for s in sections]
    assert entries == expected
    for anchor, _ in entries:
        assert html.count(f'id="{anchor}"') == 1, anchor


def test_an_absent_section_is_left_out_of_the_report_and_the_order_kept() -> None:
    chapter = Chapter("part", "Part")
    sections = (
        Section("first", "First", lambda inputs: "one", chapter),
        Section("absent", "Absent", lambda inputs: None, chapter),
        Section("again", "Again", None, chapter, view_of="first"),
        Section("last", "Last", lambda inputs: "two", chapter),
    )
    present = present_sections(cast(AuditInputs, object()), sections)  # builders ignore it
    assert [(s.id, s.title, s.partial, s.view) for s in present] == [
        ("first", "First", "sections/first.html.j2", "one"),
        ("again", "Again", "sections/again.html.j2", "one"),
        ("last", "Last", "sections/last.html.j2", "two"),
    ]


def test_every_registered_section_has_its_partial() -> None:
    assert len({s.id for s in SECTIONS}) == len(SECTIONS)
    for section in SECTIONS:
        assert resource_path("templates", *section.partial.split("/")).is_file(), section.id


_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_COMPUTING = re.compile(r"(?<![\w.])\d|[*/+%<>-]|[=!]=|\b(?:min|max|sum|round|int|float|abs)\b")


def test_templates_compute_nothing() -> None:
    """No arithmetic, comparison, numeric literal or min/max inside ``{{ }}`` or ``{% %}``:
    thresholds, counts and derived lists are computed in the views."""
    found = []
    templates = sorted(TEMPLATES.glob("**/*.j2"))
    assert any(t.parent.name == "sections" for t in templates)
    for template in templates:
        for match in _TAG.finditer(template.read_text(encoding="utf-8")):
            expression = (match.group(1) or match.group(2)).strip("-+ \n")
            if _COMPUTING.search(_STRING.sub("''", expression)):
                found.append(f"{template.relative_to(TEMPLATES)}: {match.group(0)}")
    assert not found, "\n".join(found)


def test_number_formatting_does_not_import_weasyprint() -> None:
    probe = "import sys, auditor.report.format; print('weasyprint' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip() == "False"


def test_pdf_pages_are_numbered_and_the_contents_give_pages(pdf_text: list[str]) -> None:
    total = len(pdf_text)
    assert f"Page 2 of {total}" in pdf_text[1]
    assert f"Page {total} of {total}" in pdf_text[-1]
    contents = squash(pdf_text[1]).replace(".", "")
    assert contents.startswith("Contents")
    for appendix in ("Appendix A. Every method", "Appendix B. Detailed tables and checks"):
        page = next(i + 1 for i, text in enumerate(pdf_text) if text.lstrip().startswith(appendix))
        assert f"{squash(appendix).replace('.', '')}" in contents, appendix
        assert re.search(f"{squash(appendix).replace('.', '')}[^0-9]*{page}(?![0-9])", contents)


def test_reproducibility_records_versions_seed_and_data_hash(
    audit: tuple[Result, Path], pdf_text: list[str]
) -> None:
    import json

    _, folder = audit
    start = next(i for i, t in enumerate(pdf_text) if "Settings and reproducibility\n" in t[:60])
    end = next(i for i, t in enumerate(pdf_text) if t.lstrip().startswith("Sign-off"))
    appendix = "\n".join(pdf_text[start:end])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["data"]["sha256"] in squash(appendix)
    for package in ("python", "torch", "torchvision", "auditor", "captum", "scikit-image"):
        assert package in appendix
    assert "auditorrun--model=" in squash(appendix) and "--seed=1" in squash(appendix)


def test_class_names_are_escaped_in_the_html(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    html = (folder / "report.html").read_text()
    assert XSS_CLASS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_is_self_contained(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    html = (folder / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in html and "http://" not in html and "https://" not in html


def test_the_excluded_file_is_in_the_report(pdf_text: list[str]) -> None:
    excluded = next(t for t in pdf_text[2:] if "Excluded files\n" in t)
    assert "images/corrupt.png" in excluded and "cannot decode image" in excluded


def test_url_fetcher_refuses_anything_outside_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "inside.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("secret")
    fetcher = run_folder_fetcher(run)
    with pytest.raises(ValueError, match="outside the run folder"):
        fetcher.fetch((tmp_path / "secret.txt").as_uri())
    with pytest.raises(ValueError, match="outside the run folder"):
        fetcher.fetch((run / ".." / "secret.txt").as_uri())
    with pytest.raises(ValueError):
        fetcher.fetch("http://example.org/tracker.png")
    response = fetcher.fetch((run / "inside.png").as_uri())
    assert response is not None


def test_number_filters() -> None:
    assert percent(0.87345) == "87.3%" and percent(float("nan")) == "—" and percent(None) == "—"
    assert fixed(0.12345, 2) == "0.12"
    assert thousands(1234567) == "1,234,567"
    assert si(1.82e9, "FLOPs") == "1.82 GFLOPs" and si(512) == "512"
    assert binary_size(3 * 1024 * 1024) == "3.00 MiB" and binary_size(10) == "10 B"
    assert whole_percent(0.1) == "10%" and percent(0.1) == "10.0%"
    assert hundredths(0.126) == "0.13" and tenths(12.36) == "12.4" and fixed(0.12345) == "0.123"
    assert fixed(None) == "—" and hundredths(float("nan")) == "—"
