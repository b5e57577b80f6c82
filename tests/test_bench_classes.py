"""benchmarks/bench_classes.py at a tiny scale: it runs both audits and prints the ratio of
the medians it returns (timings themselves are not checked)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import load_benchmark


def test_the_printed_ratio_is_the_ratio_of_the_two_audit_times(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_classes", monkeypatch)

    tiny = "--classes 40 --baseline-classes 3 --images 4 --methods saliency --explain-samples 1"
    medians = bench.main([*tiny.split(), "--device", "cpu"])

    out = capsys.readouterr().out
    ratio = re.search(r"ratio 40 / 3 classes: (\d+\.\d\d) \(goal <= 2\)", out)
    assert ratio, out
    assert float(ratio.group(1)) == pytest.approx(medians["many"] / medians["few"], abs=0.01)
    assert re.search(r"^\s+40 classes: .*metrics\.json \d+ KiB", out, flags=re.M), out
