"""benchmarks/bench_explain.py runs end to end on a tiny model (its timings are not checked)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from auditor.explain import METHODS
from tests.helpers import TinyNet, load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_explain.py"


def test_quick_run_prints_a_row_per_method_and_the_family_line_last(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_explain", monkeypatch)
    threads = torch.get_num_threads()

    bench.main(["--quick", "--device", "cpu", "--threads", "1"], model=TinyNet())

    lines = capsys.readouterr().out.strip().splitlines()
    assert torch.get_num_threads() == threads, "the thread count is restored"
    first_cells = [line.split(" ", 1)[0] for line in lines]
    for key in METHODS:
        row = lines[first_cells.index(key)] if key in first_cells else ""
        assert row and "n/a" not in row, f"no timed row for {key}:\n" + "\n".join(lines)
    assert re.fullmatch(r"gradient family: \d+\.\d\d x forward\+backward", lines[-1]), lines[-1]
