"""benchmarks/bench_counterfactuals.py runs end to end on a tiny model (its timings are not
checked): it prints the search, its floor, their ratio and the passes per counterfactual."""

from __future__ import annotations

import re

import pytest

from tests.helpers import load_benchmark, varied_tiny_net


def test_quick_run_prints_the_search_its_floor_their_ratio_and_the_passes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_counterfactuals", monkeypatch)

    bench.main(["--quick", "--device", "cpu"], model=varied_tiny_net())

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"search \d+\.\d{3} s  pass floor \d+\.\d{3} s", lines[-3]), lines
    assert re.fullmatch(r"ratio search / pass floor: \d+\.\d\d \(goal <= 1\.15\)", lines[-2])
    passes = re.fullmatch(
        r"forward passes per counterfactual: (\d+\.\d) \((\d+) batches\); valid: (\d+) of 8",
        lines[-1],
    )
    assert passes and 1.0 <= float(passes[1]) <= 1001, "within the cap of passes"
