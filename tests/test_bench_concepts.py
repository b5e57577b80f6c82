"""benchmarks/bench_concepts.py runs end to end on a tiny model (its timings are not checked)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import TinyNet, load_benchmark


def test_quick_run_prints_the_stage_its_floor_and_their_ratio(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_concepts", monkeypatch)

    bench.main(["--quick", "--device", "cpu"], model=TinyNet())

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"\S+ at 32 px, 8 images, \d+ layers \(\d+ units\), 5 concepts, batch 16",
                        lines[-5]), lines  # fmt: skip
    assert re.fullmatch(r"dissection stage \d+\.\d{3} s  pass floor \d+\.\d{3} s", lines[-4])
    assert re.fullmatch(r"ratio stage / pass floor: \d+\.\d\d \(goal <= 1\.3\)", lines[-3])
    split = re.fullmatch(
        r"of the stage: reading, forward passes and storing (\d+\.\d{3}) s \(\d+\.\d\d x the "
        r"floor\), thresholds and tally (\d+\.\d{3}) s \(\d+\.\d\d x the floor\)",
        lines[-2],
    )
    stage = float(lines[-4].split()[2])
    assert split and abs(float(split[1]) + float(split[2]) - stage) <= 0.002, "the split adds up"
