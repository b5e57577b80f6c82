"""The run folder's documents: CSV cells a spreadsheet cannot execute, one writer for all."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from auditor.documents import spreadsheet_safe, write_csv

PACKAGE = Path(__file__).resolve().parents[1] / "auditor"


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=cmd|' -C calc'!A0", "'=cmd|' -C calc'!A0"),
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("benign", "benign"),
        ("a=b", "a=b"),
        ("-0.5", "-0.5"),
        ("+3", "+3"),
        ("-1e-3", "-1e-3"),
        ("", ""),
    ],
)
def test_text_that_would_start_a_formula_gets_a_leading_quote(text: str, written: str) -> None:
    assert spreadsheet_safe(text) == written


def test_write_csv_quotes_text_cells_and_headers_and_leaves_numbers(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "label": pd.Series(["=1+1", "benign"], dtype="string"),
            "=cmd": pd.Series(["@x", None], dtype="object"),
            "confidence": [-0.25, 0.75],
            "correct": [True, False],
        }
    )
    path = tmp_path / "t.csv"

    write_csv(frame, path)

    back = pd.read_csv(path, keep_default_na=False)
    assert list(back.columns) == ["label", "'=cmd", "confidence", "correct"]
    assert back["label"].tolist() == ["'=1+1", "benign"]
    assert back["'=cmd"].tolist() == ["'@x", ""]
    assert back["confidence"].tolist() == [-0.25, 0.75]
    assert back["correct"].tolist() == [True, False]
    assert frame["label"].tolist() == ["=1+1", "benign"], "the frame itself is not changed"


def test_every_csv_the_package_writes_goes_through_write_csv() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in ("documents.py", "synthetic.py")  # synthetic writes its own data
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"\.to_csv\(|csv\.(writer|DictWriter)\(", line)
    ]
    assert not offenders, f"write CSV tables with auditor.documents.write_csv: {offenders}"
