"""One meaning per term: "sensitivity" is the clinical true-positive rate only, curve areas
are named by their curve, and the glossary defines what the report uses."""

from __future__ import annotations

import html as html_module
import re
from pathlib import Path

from click.testing import Result

from auditor.aggregate.glossary import GLOSSARY

ROOT = Path(__file__).resolve().parents[1]

STABILITY_AS_SENSITIVITY = re.compile(
    r"max[-_ ]sensitivity|sensitivity[-_](threshold|samples|radius)", re.IGNORECASE
)
"""The map-stability check named as a sensitivity (as its paper, Yeh et al., does)."""

MAP_SECTIONS = ("trust", "gallery", "explanations", "trust-checks", "misclassified", "sampled")
"""Sections about the explanation maps, where "sensitivity" could only mean their stability."""


def _text(markup: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    without = re.sub(r"<style.*?</style>|<img[^>]*>", " ", markup, flags=re.DOTALL)
    return " ".join(html_module.unescape(re.sub(r"<[^>]+>", " ", without)).split())


def _section(markup: str, section_id: str) -> str:
    start = markup.index(f'<section id="{section_id}">')
    return markup[start : markup.index("</section>", start)]


def test_stability_is_never_called_sensitivity_in_the_run_folder_or_the_docs(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    texts = {path.name: path.read_text(encoding="utf-8") for path in folder.glob("*.*")
             if path.suffix in (".html", ".csv", ".json", ".md")}  # fmt: skip
    texts["README.md"] = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "trust.csv" in texts and "metrics.json" in texts and "report.html" in texts
    found = {name: m.group(0) for name, text in texts.items()
             if (m := STABILITY_AS_SENSITIVITY.search(text))}  # fmt: skip
    assert not found, found
    assert "map_instability" in texts["trust.csv"].splitlines()[0]


def test_the_map_sections_never_say_sensitivity_and_the_stability_check_is_named(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    markup = (folder / "report.html").read_text(encoding="utf-8")
    for section_id in MAP_SECTIONS:
        text = _text(_section(markup, section_id))
        assert "sensitiv" not in text.lower(), section_id
    assert "map instability" in _text(_section(markup, "trust-checks"))


def test_every_area_under_a_curve_is_named_by_its_curve(audit: tuple[Result, Path]) -> None:
    _, folder = audit
    text = _text((folder / "report.html").read_text(encoding="utf-8"))
    bare = [text[max(m.start() - 40, 0) : m.end() + 10] for m in re.finditer(r"\bAUC\b", text)
            if text[max(m.start() - 4, 0) : m.start()] != "ROC "]  # fmt: skip
    assert not bare, bare
    assert "ROC AUC" in text


def test_the_glossary_defines_each_term_once_and_the_report_shows_it(
    audit: tuple[Result, Path],
) -> None:
    terms = [t.term for t in GLOSSARY]
    assert len(set(terms)) == len(terms)
    sensitivity = next(t for t in GLOSSARY if t.term == "Sensitivity")
    assert "true-positive rate" in sensitivity.meaning
    _, folder = audit
    glossary = _text(_section((folder / "report.html").read_text(encoding="utf-8"), "glossary"))
    for term in GLOSSARY:
        assert _text(term.term) in glossary and _text(term.meaning) in glossary, term.term
