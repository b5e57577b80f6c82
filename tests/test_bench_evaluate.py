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
    assert re.fullmatch(r"evaluation / bare throughput: \d+\.\d{3} \(goal >= 0\.9\)", lines[-4])
    assert lines[-3] == "embedding: the input of the last linear layer (classifier)"
    assert re.fullmatch(
        r"evaluation time with / without embeddings: \d+\.\d{3} \(goal <= 1\.05\)", lines[-2]
    )
    assert lines[-1] == "peak GPU memory: not measured on cpu"


def test_an_architecture_with_autocast_prints_the_calls_it_changed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--arch`` scripts a torchvision model; ``--precision`` times autocast against
    float32 and counts the calls it changed."""
    bench = load_benchmark("bench_evaluate", monkeypatch)

    bench.main(
        ["--arch", "resnet18", "--image-size", "32", "--images", "24", "--repeats", "1",
         "--device", "cpu", "--precision", "bf16"]
    )  # fmt: skip

    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model resnet18.pt, 24 images")
    assert re.fullmatch(
        r"bf16 autocast / float32 throughput: \d+\.\d{3}; calls changed: \d+ of 24", lines[-2]
    )
