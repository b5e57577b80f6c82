"""What the benchmarks share: the model and images, the machine line, median timing."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn

from auditor.images import Preprocessing
from auditor.load import LoadedModel, first_line, load_model, resolve_device
from auditor.synthetic import generate

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
Run = Callable[[], object]


def stage_arguments(argv: list[str] | None, doc: str | None) -> argparse.Namespace:
    """The options of a benchmark that times a stage against its pass floor: ``--arch``,
    ``--image-size``, ``--images``, ``--batch-size``, ``--device``, ``--repeats`` and
    ``--quick`` (8 images at 32 px, one repeat)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 images at 32 px, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.image_size, args.repeats = 8, 32, 1
    return args


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


def peak_memory(device: torch.device) -> str:
    """The peak GPU memory the process's tensors held on ``device`` (PyTorch's allocator,
    so without the CUDA context), or a line saying there is none to measure."""
    if device.type != "cuda":
        return f"peak GPU memory: not measured on {device}"
    return f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


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


@dataclass
class Subject:
    """The benchmarked model, its eager twin and the images they both see.

    Attributes:
        model: The model scripted to TorchScript, saved and loaded as a user's file.
        eager: Its eager twin (same weights), on the same device.
        preprocessing: ImageNet normalisation (grayscale: 0.5, 0.25) at the image size.
        display: ``(N, C, H, W)`` synthetic images in [0, 1], on the CPU.
        inputs: ``display`` normalised, on the device.
    """

    model: LoadedModel
    eager: nn.Module
    preprocessing: Preprocessing
    display: torch.Tensor
    inputs: torch.Tensor


def subject(
    arch: str,
    classes: int,
    image_size: int,
    images: int,
    device_name: str,
    eager: nn.Module | None,
    folder: Path,
) -> Subject:
    """``eager`` (or torchvision's ``arch`` with random weights, seeded so that runs
    compare) and ``images`` demo images."""
    device = resolve_device(device_name)
    torch.manual_seed(0)
    eager = (eager or getattr(torchvision.models, arch)(num_classes=classes)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(eager).save(str(folder / "model.pt"))
    model = load_model(folder / "model.pt", device)
    mean, std = IMAGENET if model.in_channels == 3 else ((0.5,), (0.25,))
    preprocessing = Preprocessing(model.in_channels, image_size, mean, std)
    pictures = generate("val", images, seed=0)
    display = torch.stack([preprocessing.display(Image.fromarray(i.image)) for i in pictures])
    inputs = preprocessing.normalise(display).to(device)
    return Subject(model, eager.to(device), preprocessing, display, inputs)
