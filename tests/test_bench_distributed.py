"""benchmarks/bench_distributed.py at a tiny scale: it runs the sharded audit and the two
single-process ones, and prints each stage's seconds, the speed-ups it returns and how
the sharded run's files compare (timings themselves are not checked)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import load_benchmark


def test_the_printed_speed_ups_are_the_returned_ones(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_distributed", monkeypatch)

    tiny = "--images 24 --explain-samples 1 --methods saliency,grad-cam --batch-size 8"
    speedups = bench.main(tiny.split())

    out = capsys.readouterr().out
    assert re.search(r"^trust\s+(\d+\.\d\s+){2}\d+\.\d$", out, flags=re.M), out
    for reference, speedup in speedups.items():
        line = rf"speed-up of 2 x 1 threads over {reference}: shared stages \(evaluate, explain, "
        found = re.search(line + r"trust\) (\d+\.\d\d), whole run \d+\.\d\d", out)
        assert found and float(found.group(1)) == pytest.approx(speedup, abs=0.01), out
    # smaller batches than one process's may move the last digits: within 1e-5
    compared = re.search(r"run folders of 2 x 1 threads and 1 x 1 threads: (.*)", out)
    assert compared, out
    gaps = re.findall(r"by (?:at most )?(\d\.\de[+-]\d\d)", compared.group(1))
    assert compared.group(1).startswith("same bytes") or (gaps and max(map(float, gaps)) <= 1e-5)
