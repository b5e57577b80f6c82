"""Two runs with the same seed, model and data on one machine give the same files, byte for
byte: every CSV, JSON and array file (the .npz too). What differs is only what says when
and where a run happened: the run folder's name, manifest.json's times and command line,
and the documents that print them.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import Result

from tests.helpers import assert_same_results, invoke


def test_a_second_run_with_the_same_seed_gives_identical_results(
    audit: tuple[Result, Path], tmp_path: Path
) -> None:
    first = audit[1]
    manifest = json.loads((first / "manifest.json").read_text())
    again = invoke(
        "run", "--model", manifest["model"]["path"], "--data", manifest["data"]["source"],
        "--out", str(tmp_path), "--explain-samples", "3", "--batch-size", "4", "--seed", "1",
        "--device", "cpu", "--patient-column", "patient", "--history", "-",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    second = Path(again.stdout.strip().splitlines()[-1])

    assert_same_results(first, second)
