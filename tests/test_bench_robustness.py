"""benchmarks/bench_robustness.py runs end to end on a tiny model (its timings are not checked)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import TinyNet, load_benchmark


def test_quick_run_prints_the_stage_its_floor_and_their_ratio(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_robustness", monkeypatch)

    bench.main(["--quick", "--device", "cpu"], model=TinyNet())

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"\S+ at 32 px, 8 images x 21 perturbed versions = 168 forward passes, "
                        r"batch 16", lines[-3]), lines  # fmt: skip
    assert re.fullmatch(r"robustness stage \d+\.\d{3} s  pass floor \d+\.\d{3} s", lines[-2])
    assert re.fullmatch(r"ratio stage / pass floor: \d+\.\d\d \(goal <= 1\.15\)", lines[-1])
