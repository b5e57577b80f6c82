"""The rendered report: PDF text, escaping, self-contained HTML, and the URL fetcher."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import Result
from pypdf import PdfReader

from auditor.report.render import RunFolderFetcher, binary_size, fixed, percent, si, thousands
from tests.helpers import XSS_CLASS

SECTIONS = [
    "Contents",
    "Summary",
    "Model identity and architecture",
    "Data",
    "Performance",
    "Calibration",
    "Subgroups",
    "Explanation methods",
    "Explanation trust",
    "Can the explanations be trusted?",
    "Misclassified cases",
    "Sampled cases",
    "Excluded files",
    "Limitations",
    "Reproducibility",
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
    for title in SECTIONS:
        assert title in whole, title
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert sha in squash(whole)


def test_trust_section_gives_every_methods_verdict_from_trust_csv(
    pdf_text: list[str], audit: tuple[Result, Path]
) -> None:
    _, folder = audit
    trust = pd.read_csv(folder / "trust.csv")
    whole = squash("\n".join(pdf_text))
    section = whole[whole.index("Explanationtrust", whole.index("Explanationtrust") + 1) :]
    assert len(trust) >= 10
    for verdict in trust["verdict"]:
        assert squash(verdict) in section, verdict


def test_pdf_pages_are_numbered_and_the_contents_give_pages(pdf_text: list[str]) -> None:
    total = len(pdf_text)
    assert f"Page 2 of {total}" in pdf_text[1]
    assert f"Page {total} of {total}" in pdf_text[-1]
    contents = squash(pdf_text[1])
    summary_page = next(
        i + 1 for i, text in enumerate(pdf_text) if text.lstrip().startswith("Summary")
    )
    assert f"Summary{summary_page}" in contents.replace(".", "")


def test_reproducibility_records_versions_seed_and_data_hash(
    audit: tuple[Result, Path], pdf_text: list[str]
) -> None:
    import json

    _, folder = audit
    start = next(i for i, t in enumerate(pdf_text) if t.lstrip().startswith("Reproducibility"))
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
    excluded = next(t for t in pdf_text if t.lstrip().startswith("Excluded files"))
    assert "images/corrupt.png" in excluded and "cannot decode image" in excluded


def test_url_fetcher_refuses_anything_outside_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "inside.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("secret")
    fetcher = RunFolderFetcher(run)
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
