"""A catalogue of hostile strings through every output of one real run.

Class names, a metadata column's name and its values come from the catalogue (HTML,
script, CSS, TeX, spreadsheet formulas, terminal escapes, bidirectional overrides, a
10,000-character value). The run must succeed, and each output must show them
literally: escaped in the HTML, quoted in the CSVs, as they are in the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import Result

from tests.helpers import TinyNet, invoke, save_torchscript, write_manifest, write_png

FORMULA_CLASS = '=HYPERLINK("http://example.com","click")'
TEX_CLASS = "<b>$\\frac{x_{$</b> </style><style>*{display:none}</style>"
LONG = "A" * 10_000
VALUES = ["\x1b[31mred\x1b[0m", "\u202egnp.exe", "@SUM(A1:A9)", LONG]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    rows = []
    for k, label in enumerate((FORMULA_CLASS, TEX_CLASS)):
        for i in range(4):
            image = write_png(folder / f"{k}_{i}.png", seed=10 * k + i)
            rows.append({"path": image.name, "label": label, "=cmd|' -C calc'!A0": VALUES[i]})
    manifest = write_manifest(folder, rows)
    model = save_torchscript(TinyNet(), folder / "tiny.pt")
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--out", str(folder / "r"),
        "--explain-samples", "1", "--device", "cpu", "--methods", "saliency,grad-cam",
    )  # fmt: skip
    assert result.exit_code == 0, (result.stderr or "") + result.output
    return result, Path(result.stdout.strip().splitlines()[-1])


def test_the_csvs_show_every_hostile_string_literally(hostile_run: tuple[Result, Path]) -> None:
    _, folder = hostile_run
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)

    assert "'=cmd|' -C calc'!A0" in predictions.columns
    assert set(predictions["label"]) == {"'" + FORMULA_CLASS, TEX_CLASS}
    assert set(predictions["'=cmd|' -C calc'!A0"]) == {*VALUES[:2], "'" + VALUES[2], LONG}
    for name in ("explanations.csv", "trust.csv", "trust_records.csv", "excluded.csv"):
        text = (folder / name).read_text(encoding="utf-8")
        assert not any(cell.startswith(("=", "+", "@")) for line in text.splitlines()
                       for cell in line.split(",")), name  # fmt: skip


def test_the_html_escapes_every_hostile_string(hostile_run: tuple[Result, Path]) -> None:
    _, folder = hostile_run
    html = (folder / "report.html").read_text(encoding="utf-8")

    assert "<b>$" not in html and "</style><style>*{display:none}" not in html
    assert "&lt;b&gt;$\\frac{x_{$&lt;/b&gt;" in html
    assert html.count("<style>") == 1, "only the report's own stylesheet"
    assert LONG not in html and "A… (10,000 characters)" in html, "shown shortened"


def test_the_html_shows_control_and_bidirectional_characters_as_code_points(
    hostile_run: tuple[Result, Path],
) -> None:
    _, folder = hostile_run
    html = (folder / "report.html").read_text(encoding="utf-8")
    predictions = pd.read_csv(folder / "predictions.csv", keep_default_na=False)

    assert "\u202e" not in html and "\x1b" not in html
    assert "⟨U+202E⟩gnp.exe" in html, "the override cannot turn the name around"
    assert "⟨U+001B⟩[31mred⟨U+001B⟩[0m" in html
    assert "\u202egnp.exe" in set(predictions["'=cmd|' -C calc'!A0"]), "the CSV keeps it exact"


def test_the_json_keeps_the_strings_as_they_are_and_the_pdf_is_written(
    hostile_run: tuple[Result, Path],
) -> None:
    _, folder = hostile_run
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))

    assert sorted(metrics["classes"]) == sorted([FORMULA_CLASS, TEX_CLASS])
    assert (folder / "report.pdf").read_bytes().startswith(b"%PDF")
