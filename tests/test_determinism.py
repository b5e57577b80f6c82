"""Two runs with the same seed, model and data on one machine give the same files, byte for
byte: every CSV, JSON and array file (the .npz too). What differs is only what says when
and where a run happened: the run folder's name, manifest.json's times and command line,
and the documents that print them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import Result

from tests.helpers import invoke

WHEN_AND_WHERE = {"manifest.json", "SHA256SUMS", "report.html", "report.pdf", "summary.md"}
"""Files that record the run's times, its folder or its command line."""


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

    names = {p.name for p in first.iterdir()}
    assert names == {p.name for p in second.iterdir()}
    for name in sorted(names - WHEN_AND_WHERE):
        a, b = first / name, second / name
        if name.endswith(".npz"):
            with np.load(a) as left, np.load(b) as right:
                assert sorted(left.files) == sorted(right.files), name
                for key in left.files:
                    np.testing.assert_array_equal(left[key], right[key], err_msg=f"{name}:{key}")
        elif name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(a), np.load(b), err_msg=name)
        else:
            assert a.read_bytes() == b.read_bytes(), name
    hashes = (json.loads((f / "manifest.json").read_text()) for f in (first, second))
    left, right = ({k: v for k, v in m["files"].items() if k not in WHEN_AND_WHERE} for m in hashes)
    assert left == right  # the .npz files too: their members carry no time
