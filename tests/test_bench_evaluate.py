"""benchmarks/bench_evaluate.py runs end to end on the bundled model (its timings are not
checked): it prints the throughput ratio and the cost of keeping the embeddings."""

from __future__ import annotations

import re

import pytest

from tests.helpers import load_benchmark


def test_quick_run_prints_both_ratios(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_evaluate", monkeypatch)

    bench.main(["--images", "48", "--repeats", "1", "--device", "cpu", "--batch-size", "16"])

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"evaluation / bare throughput: \d+\.\d{3} \(goal >= 0\.9\)", lines[-3])
    assert lines[-2] == "embedding: the input of the last linear layer (classifier)"
    assert re.fullmatch(
        r"evaluation time with / without embeddings: \d+\.\d{3} \(goal <= 1\.05\)", lines[-1]
    )
