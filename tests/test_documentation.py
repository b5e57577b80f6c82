"""Declared context: the documentation tables, their gaps, the title page, footer and sign-off."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from auditor.aggregate.datasheet import duplicates
from auditor.aggregate.reproducibility import document_command
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
organisation = "St Elsewhere Imaging"
logo = "brand/logo.png"
"""

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
    b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
    b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)
"""A 1×1 PNG."""


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
    (tmp_path / "brand").mkdir()
    (tmp_path / "brand" / "logo.png").write_bytes(PNG)
    brand = tmp_path / "brand" / "brand.css"
    brand.write_text(".page-one-head h1 { color: #7a0019; }\n")
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path / "o"),
        "--config", str(config), "--explain-samples", "0", "--brand-css", str(brand),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    html = (folder / "report.html").read_text()

    title = html[: html.index('<nav class="toc"')]
    for text in ("Lesion classifier, version 2.1", "Triage of dermoscopy images", "QA-7 rev. 3",
                 "St Elsewhere Imaging"):  # fmt: skip
        assert text in title, text
    assert f'class="logo" src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in title
    styles = html.index("<style>"), html.index("#7a0019")
    assert styles[0] < html.index("@page") < styles[1], "the brand stylesheet comes last"
    context = html[html.index('id="context"') : html.index('id="model"')]
    assert "Documentation gaps" in context and "[data-details]" in context
    assert "reference-standard" in context
    assert "(the model's name as its users know it)" not in context, "declared, not a gap"
    signoff = html[html.index('id="signoff"') :]
    assert "Dr A. Reviewer" in signoff and "B. Quality" in signoff
    for name in ("metrics.json", "predictions.csv", "trust.csv", "policy.json"):
        sha = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f'{name}</td><td class="mono">{sha}' in signoff, name
    pages = [page.extract_text() for page in PdfReader(folder / "report.pdf").pages]
    total = len(pages)
    for number, page in enumerate(pages, start=1):
        assert "QA-7 rev. 3" in page and f"Page {number} of {total}" in page, number


def test_the_document_names_no_local_absolute_path_but_in_the_command_as_typed(
    audit: tuple[object, Path],
) -> None:
    folder = audit[1]
    html = (folder / "report.html").read_text()
    command = html.index("<tr><th>Command</th>")
    without_command = html[:command] + html[html.index("</tr>", command) :]

    assert "/tmp/" not in without_command and str(Path.home()) + "/" not in without_command
    assert "data0/manifest.csv" in without_command, "the data named by folder and file"


def test_a_logo_must_be_an_image_file(tmp_path: Path) -> None:
    source = tmp_path / "audit.toml"
    (tmp_path / "logo.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=r"logo 'logo.txt' is not a PNG, JPEG or SVG image"):
        parse_documentation({"document": {"logo": "logo.txt"}}, source)
    with pytest.raises(ConfigError, match=r"logo 'gone.png' is not a file"):
        parse_documentation({"document": {"logo": "gone.png"}}, source)
    (tmp_path / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    documentation = parse_documentation({"document": {"logo": "logo.svg"}}, source)
    assert documentation.logo_uri().startswith("data:image/svg+xml;base64,")


def test_the_command_line_shown_names_absolute_paths_by_folder_and_file() -> None:
    command = "auditor run --model=/home/a/models/m.pt --data /srv/x/val/manifest.csv --seed=3"
    assert document_command(command) == (
        "auditor run --model=…/models/m.pt --data …/val/manifest.csv --seed=3"
    )
    assert document_command("auditor run '--classes=a b,c'") == "auditor run '--classes=a b,c'"


def test_the_datasheet_counts_equal_predictions_csv(audit: tuple[object, Path]) -> None:
    folder = audit[1]
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"site": "string"})
    html = (folder / "report.html").read_text()
    data = html[html.index('<section id="data">') : html.index('<section id="excluded">')]
    counts = pd.crosstab(predictions["site"].fillna("(empty)"), predictions["label"])
    for value, row in counts.iterrows():
        cells = (
            "".join(f'<td class="num">{n}</td>' for n in row) + f'<td class="num">{row.sum()}</td>'
        )
        assert f'<td class="text">{value}</td>{cells}' in data, value
    unique = predictions["sha256"].nunique() == len(predictions)
    assert ("No two evaluated images are byte-identical" in data) == unique


def test_duplicates_are_grouped_by_content_and_flag_disagreeing_labels() -> None:
    frame = pd.DataFrame({
        "path": ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"],
        "label": ["x", "x", "y", "y", "x", "y"],
        "sha256": ["1", "1", "2", "2", "2", "3"],
    })  # fmt: skip
    found = duplicates(frame)
    assert [(d.paths, d.conflicting) for d in found] == [
        (("c.png", "d.png", "e.png"), True),
        (("a.png", "b.png"), False),
    ]
