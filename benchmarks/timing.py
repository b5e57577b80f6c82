"""What the benchmarks share: the machine line and interleaved median timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from auditor.load import first_line

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
Run = Callable[[], object]


def machine(device: torch.device) -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line for line in (cpuinfo.read_text() if cpuinfo.exists() else "").splitlines()]
    names = [line.split(":", 1)[1].strip() for line in names if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"machine: {cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
    )


def median_times(
    runs: dict[str, Run], repeats: int, warmup: int, device: torch.device, optional: Iterable = ()
) -> dict:
    """Median wall time of each run after ``warmup`` runs each; runs interleave per repeat.

    An ``optional`` run that raises during warm-up gets its error instead of a time.
    """

    def timed(run: Run) -> float:
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    failed: dict[str, str] = {}
    optional = set(optional)
    for name, run in runs.items():
        try:
            for _ in range(warmup):
                timed(run)
        except Exception as error:
            if name not in optional:
                raise
            failed[name] = f"failed: {first_line(error)}"[:40]
    times: dict[str, list[float]] = {name: [] for name in runs if name not in failed}
    for _ in range(repeats):
        for name in times:
            times[name].append(timed(runs[name]))
    return {name: statistics.median(values) for name, values in times.items()} | failed
