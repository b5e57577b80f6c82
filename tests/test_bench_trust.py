"""benchmarks/bench_trust.py runs end to end on a tiny model (its timings are not checked)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.helpers import TinyNet, load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_trust.py"
NUMBER = r"\d+(\.\d+)?(e-?\d+)?"


def test_quick_run_prints_both_metrics_with_ratios_and_restores_threads(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_trust", monkeypatch)
    threads = torch.get_num_threads()

    bench.main(["--quick", "--device", "cpu", "--threads", "1"], model=TinyNet())

    lines = capsys.readouterr().out.strip().splitlines()
    assert torch.get_num_threads() == threads, "the thread count is restored"
    text = "\n".join(lines)
    timed = rf"auditor {NUMBER} s/image  quantus {NUMBER} s/image  quantus/auditor \d+\.\d\d"
    curves = rf"deletion\+insertion +{timed}  auditor/floor \d+\.\d\d"
    assert any(re.fullmatch(curves, line) for line in lines), text
    assert any(re.fullmatch(rf"map instability +{timed}", line) for line in lines), text
    gap = re.search(rf"max \|auditor - quantus\| over the curves ({NUMBER})", text)
    assert gap and float(gap.group(1)) < 1e-5, "both compute the same curves"
    summary = r"summary: quantus/auditor \d+\.\d\d on the curves, \d+\.\d\d on map instability; "
    summary += r"auditor/floor \d+\.\d\d on the curves; "
    summary += rf"trust/explain passes ({NUMBER}) \(budget 3\), time \d+\.\d\d"
    assert lines[-1] == "peak GPU memory: not measured on cpu"
    found = re.fullmatch(summary, lines[-2])
    assert found, lines[-2]
    assert float(found.group(1)) <= 3.0, "the trust stage keeps within its budget"
    passes = r"  passes \(forward-pass units\): explain [\d,]+, trust [\d,]+; full protocol "
    assert any(re.match(passes, line) for line in lines), text
