"""benchmarks/bench_explain.py on a tiny model: the pass floor it divides by is the right one.

Timings are not checked (they depend on the machine); what is checked is what the ratios
are made of: each method's floor passes against a count by hand for TinyNet at 32 px with
the benchmark's quick settings, and each printed ratio against the printed times.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from auditor.explain import METHODS
from tests.helpers import TinyNet, load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_explain.py"

# Quick settings: 32 px, IG 4 steps, SmoothGrad 4 copies, LIME/KernelSHAP 16 samples,
# occlusion window 8 (stride 4: 7 x 7 positions, plus the unoccluded image).
# TinyNet's target layer has 8 channels: Score-CAM runs 8 masked passes plus the image.
# The gradient methods read one shared forward+backward pass; CAM reads activations only.
BY_HAND = {
    "saliency": "1fb",
    "input-x-gradient": "1fb",
    "guided-backprop": "1fb",
    "integrated-gradients": "4fb",
    "smoothgrad": "4fb",
    "occlusion": f"{7 * 7 + 1}f",
    "cam": "1f",
    "grad-cam": "1fb",
    "grad-cam-plus-plus": "1fb",
    "guided-grad-cam": "1fb",
    "score-cam": f"{8 + 1}f",
    "lime": "16f",
    "kernel-shap": "16f",
}

# Methods with passes of their own run on --perturbation-images (2), the others on --images (4).
PERTURBATION = {
    "integrated-gradients",
    "smoothgrad",
    "occlusion",
    "score-cam",
    "lime",
    "kernel-shap",
}


def test_each_method_is_divided_by_its_pass_floor_counted_by_hand(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load_benchmark("bench_explain", monkeypatch)
    threads = torch.get_num_threads()

    bench.main(["--quick", "--device", "cpu", "--threads", "1"], model=TinyNet())

    lines = capsys.readouterr().out.strip().splitlines()
    assert torch.get_num_threads() == threads, "the thread count is restored"
    # A method's row starts at the line's first character ("lime" also names a peer below it).
    rows = {line.split()[0]: line.split() for line in lines if line.split(" ", 1)[0] in METHODS}
    assert set(rows) == set(METHODS) == set(BY_HAND)
    for key, cells in rows.items():
        _, passes, images, auditor, floor, ratio = cells[:6]
        assert passes == BY_HAND[key], key
        assert int(images) == (2 if key in PERTURBATION else 4), key
        assert float(ratio) == pytest.approx(float(auditor) / float(floor), rel=0.02), key
    assert lines[-1] == "peak GPU memory: not measured on cpu"
    family = re.fullmatch(r"gradient family: (\d+\.\d\d) x forward\+backward", lines[-2])
    assert family and float(family.group(1)) > 0, lines[-2]
