"""benchmarks/bench_classes.py at a tiny scale: it runs both audits and prints the ratio of
the medians it returns (timings themselves are not checked)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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


def test_with_multi_label_the_audits_are_of_labels_on_random_sets_of_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_classes", monkeypatch)
    audited: list[tuple[int, bool]] = []

    def run_audit(config: Any, command: str) -> Path:
        folder = run_audit_itself(config, command)
        metrics = json.loads((folder / "metrics.json").read_text())
        audited.append((len(metrics["classes"]), "multi_label" in metrics))
        return folder

    run_audit_itself = bench.run_audit
    monkeypatch.setattr(bench, "run_audit", run_audit)
    tiny = "--classes 6 --baseline-classes 3 --images 12 --methods saliency --explain-samples 1"
    medians = bench.main([*tiny.split(), "--multi-label", "--device", "cpu"])

    assert audited == [(3, True), (3, True), (6, True)], "warm-up, then few and many"
    out = capsys.readouterr().out
    ratio = re.search(r"ratio 6 / 3 labels: (\d+\.\d\d) \(goal <= 2\)", out)
    assert ratio, out
    assert float(ratio.group(1)) == pytest.approx(medians["many"] / medians["few"], abs=0.01)
    assert re.search(r"^\s+6 labels: .*metrics\.json \d+ KiB", out, flags=re.M), out
