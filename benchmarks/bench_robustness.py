"""Robustness stage: its time against its pass floor, measured side by side.

One process, one model (a torchvision architecture with random weights, scripted to
TorchScript and loaded as a user's file), ``--images`` synthetic demo images written as
PNG files and read through the stage's own loader. The stage
(``perturbed_predictions``: read each image once, apply every perturbation at every
default severity, normalise, one forward pass per perturbed image) is timed against its
**pass floor**: the same forward passes alone (``module(x)`` under
``inference_mode``, at the same batch size, on the same perturbed images, made
beforehand: decoded, resized, perturbed and normalised). Runs interleave; the median of
``--repeats`` after one warm-up run each. Goal: stage / floor <= 1.15.

No thresholds: it reports.

    python benchmarks/bench_robustness.py [--arch resnet18] [--image-size 112]
        [--images 32] [--batch-size 16] [--device auto] [--repeats 3] [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import torch
from timing import machine, median_times, stage_arguments, subject  # benchmarks/
from torch import nn

from auditor.data import discover
from auditor.images import Preprocessing
from auditor.load import OutputKind
from auditor.robustness import RobustnessSettings, perturbed_predictions, variants
from auditor.synthetic import write_dataset


def main(argv: list[str] | None = None, model: nn.Module | None = None) -> None:
    args = stage_arguments(argv, __doc__)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        bench = subject(args.arch, 2, args.image_size, args.images, args.device, model, folder)
        dataset = discover(write_dataset(folder / "val", "val", args.images, seed=0))
        settings = RobustnessSettings(batch_size=args.batch_size)
        every = variants(settings)
        predictions = pd.DataFrame({"index": range(len(dataset.samples))})
        preprocessing = Preprocessing(
            bench.model.in_channels, args.image_size, bench.preprocessing.mean,
            bench.preprocessing.std,
        )  # fmt: skip
        indices = torch.arange(args.images)
        made = [
            preprocessing.normalise(v.perturbation.apply(display, v.severity, index, settings.seed))
            for display, index in zip(
                bench.display.split(args.batch_size), indices.split(args.batch_size), strict=True
            )
            for v in every
        ]

        def stage() -> object:
            return perturbed_predictions(
                bench.model, dataset, preprocessing, OutputKind.LOGITS, predictions, settings, 1
            )

        def floor() -> object:
            with torch.inference_mode():
                for batch in made:
                    bench.model.module(batch.to(bench.model.device))
            return None

        times = median_times({"stage": stage, "floor": floor}, args.repeats, 1, bench.model.device)
    passes = len(every) * args.images
    print(machine(bench.model.device))
    print(
        f"{args.arch} at {args.image_size} px, {args.images} images x {len(every)} perturbed "
        f"versions = {passes} forward passes, batch {args.batch_size}"
    )
    print(f"robustness stage {times['stage']:.3f} s  pass floor {times['floor']:.3f} s")
    print(f"ratio stage / pass floor: {times['stage'] / times['floor']:.2f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
