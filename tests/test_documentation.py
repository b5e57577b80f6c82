"""Declared context: the documentation tables, their gaps, the title page, footer and sign-off."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pypdf import PdfReader

from auditor.config import resolve_config
from auditor.documentation import TABLES, parse_documentation
from auditor.errors import ConfigError
from tests.helpers import invoke

DECLARED = """
robustness-images = 0
bootstrap = 100
[model-details]
name = "Lesion classifier"
version = "2.1"
[intended-use]
purpose = "Triage of dermoscopy images"
[document]
id = "QA-7"
revision = "3"
approvers = ["Dr A. Reviewer", "B. Quality"]
"""


def test_tables_parse_lists_and_refuse_unknown_fields_in_one_line(tmp_path: Path) -> None:
    raw = {"document": {"id": "X", "approvers": ["a", "b"]}, "seed": 1}
    documentation = parse_documentation(raw, tmp_path / "c.toml")

    assert raw == {"seed": 1}, "the tables are taken out of the settings"
    assert documentation.get("document", "id") == "X"
    assert documentation.items("document", "approvers") == ("a", "b")
    assert len(documentation.gaps()) == sum(len(f) for f in TABLES.values()) - 2
    with pytest.raises(ConfigError, match=r"\[model-details\] has an unknown field 'versoin'; "):
        parse_documentation({"model-details": {"versoin": "1"}}, tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="must be a text or a list of texts"):
        parse_documentation({"intended-use": {"users": 3}}, tmp_path / "c.toml")
    config = tmp_path / "audit.toml"
    config.write_text('model = "m.pt"\ndata = "d"\n[intended-use]\npurpose = "triage"\n')
    assert resolve_config(config, {}).documentation.get("intended-use", "purpose") == "triage"


def test_the_report_shows_what_was_declared_its_gaps_and_binds_the_sign_off(
    tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(DECLARED)
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path / "o"),
        "--config", str(config), "--explain-samples", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    html = (folder / "report.html").read_text()

    title = html[: html.index('<section class="toc">')]
    for text in ("Lesion classifier", "2.1", "Triage of dermoscopy images", "QA-7 rev. 3"):
        assert text in title
    context = html[html.index('id="context"') : html.index('id="model"')]
    assert "Documentation gaps" in context and "[data-details]" in context
    assert (
        "reference-standard" in context
        and '[model-details]</td><td class="mono">name' not in context
    )
    signoff = html[html.index('id="signoff"') :]
    assert "Dr A. Reviewer" in signoff and "B. Quality" in signoff
    for name in ("metrics.json", "predictions.csv", "trust.csv", "policy.json"):
        sha = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f'{name}</td><td class="mono">{sha}' in signoff, name
    pages = [page.extract_text() for page in PdfReader(folder / "report.pdf").pages]
    assert "QA-7 rev. 3" not in pages[0].splitlines()[-1], "no footer on the title page"
    assert all("QA-7 rev. 3" in page for page in pages[1:]), "the footer names the document"


def test_the_document_names_no_local_absolute_path_but_in_the_command_as_typed(
    audit: tuple[object, Path],
) -> None:
    folder = audit[1]
    html = (folder / "report.html").read_text()
    command = html.index("<tr><th>Command</th>")
    without_command = html[:command] + html[html.index("</tr>", command) :]

    assert "/tmp/" not in without_command and str(Path.home()) + "/" not in without_command
    assert "data0/manifest.csv" in without_command, "the data named by folder and file"
