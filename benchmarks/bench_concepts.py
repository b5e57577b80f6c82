"""Network dissection: the stage's time against its forward-pass floor, side by side.

One process, one model (a torchvision architecture with random weights, scripted to
TorchScript and loaded as a user's file), ``--images`` synthetic demo images written as
PNG files with their lesion and marker masks. The stage (``dissect_network``: read each
image and its concept masks once, one tapped forward pass per image into memory-mapped
files, then per layer the streaming threshold and the IoU tally) is timed against its
**pass floor**: the same tapped forward passes alone (``model.tapped`` under
``inference_mode`` on the same layers, at the same batch size, on the same images made
beforehand: decoded, resized and normalised). Runs interleave; the median of
``--repeats`` after one warm-up run each. Goal: stage / floor <= 1.3. It also prints
the stage's own split (its median share, applied to its median time): reading the
images and masks, the forward passes and storing, against the rest (the thresholds
and the tally).

No thresholds: it reports.

    python benchmarks/bench_concepts.py [--arch resnet18] [--image-size 112]
        [--images 32] [--batch-size 16] [--device auto] [--repeats 3] [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import torch
from timing import machine, median_times, stage_arguments, subject  # benchmarks/
from torch import nn

from auditor.architecture import profile_model
from auditor.concepts.data import split_concepts
from auditor.concepts.settings import ConceptSettings
from auditor.concepts.stage import dissect_network
from auditor.data import discover
from auditor.explain.features import stage_layers
from auditor.images import Preprocessing
from auditor.synthetic import write_dataset


def main(argv: list[str] | None = None, model: nn.Module | None = None) -> None:
    args = stage_arguments(argv, __doc__)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        bench = subject(args.arch, 2, args.image_size, args.images, args.device, model, folder)
        settings = ConceptSettings(
            concepts=("mask", "marker_mask"), artifact_concepts=("marker_mask",),
            batch_size=args.batch_size,
        )  # fmt: skip
        dataset, data = split_concepts(
            discover(write_dataset(folder / "val", "val", args.images, seed=0)), settings
        )
        preprocessing = Preprocessing(
            bench.model.in_channels, args.image_size, bench.preprocessing.mean,
            bench.preprocessing.std, size=(args.image_size, args.image_size),
        )  # fmt: skip
        shape = (bench.model.in_channels, args.image_size, args.image_size)
        layers = stage_layers(profile_model(bench.model, shape, args.batch_size).layers)
        paths = [layer.path for layer in layers]
        predictions = pd.DataFrame({"index": range(len(dataset.samples))})
        made = bench.inputs.split(args.batch_size)

        splits: list[tuple[float, float]] = []

        def stage() -> object:
            result = dissect_network(
                bench.model, dataset, data, preprocessing, predictions, layers, settings
            )
            assert result is not None
            splits.append((result.seconds, result.forward_seconds))
            return result

        def floor() -> object:
            with torch.inference_mode():
                for batch in made:
                    bench.model.tapped(batch, paths)
            return None

        times = median_times({"stage": stage, "floor": floor}, args.repeats, 1, bench.model.device)
    print(machine(bench.model.device))
    units = sum(layer.shape[0] for layer in layers)
    print(
        f"{args.arch} at {args.image_size} px, {args.images} images, {len(layers)} layers "
        f"({units} units), {len(data.names)} concepts, batch {args.batch_size}"
    )
    print(f"dissection stage {times['stage']:.3f} s  pass floor {times['floor']:.3f} s")
    print(f"ratio stage / pass floor: {times['stage'] / times['floor']:.2f} (goal <= 1.3)")
    shares = sorted(forward / whole for whole, forward in splits[1:])  # after the warm-up
    forward = shares[len(shares) // 2] * times["stage"]
    rest = times["stage"] - forward
    print(
        f"of the stage: reading, forward passes and storing {forward:.3f} s "
        f"({forward / times['floor']:.2f} x the floor), thresholds and tally {rest:.3f} s "
        f"({rest / times['floor']:.2f} x the floor)"
    )
    print(f"forward passes per image: 1 (floor: 1); passes per result: {1 / units:.4f} per unit")


if __name__ == "__main__":
    main()
