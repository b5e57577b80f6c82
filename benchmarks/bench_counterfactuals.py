"""Segment counterfactuals: the search's time against its forward-pass floor, side by side.

One process, one model (a torchvision architecture with random weights, scripted to
TorchScript and loaded as a user's file), ``--images`` synthetic demo images with their
SLIC segments made beforehand (as LIME makes them). The search (best-first over the
segments, every step's candidates in batches of ``--batch-size``, then the
irreducibility check and the fresh re-check) is timed against its **pass floor**: the
same forward passes, at the same batch sizes, on inputs made beforehand. Runs
interleave; the median of ``--repeats`` after one warm-up run each. Goal: search /
floor <= 1.15. It also prints the forward passes per counterfactual.

No thresholds: it reports.

    python benchmarks/bench_counterfactuals.py [--arch resnet18] [--image-size 112]
        [--images 32] [--batch-size 16] [--device auto] [--repeats 3] [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from timing import machine, median_times, stage_arguments, subject  # benchmarks/
from torch import nn

from auditor.counterfactual.segments import SegmentCounterfactual, segment_counterfactual
from auditor.counterfactual.stage import fill_image
from auditor.explain.superpixels import slic_segments
from auditor.load import OutputKind, to_probabilities

SEGMENTS = 50
MAX_SIZE = 8
MAX_PASSES = 1000


def main(argv: list[str] | None = None, model: nn.Module | None = None) -> None:
    args = stage_arguments(argv, __doc__)
    with tempfile.TemporaryDirectory() as scratch:
        bench = subject(
            args.arch, 2, args.image_size, args.images, args.device, model, Path(scratch)
        )
        loaded, device = bench.model, bench.model.device
        segments = [slic_segments(image, SEGMENTS) for image in bench.display]
        fills = [fill_image(image, "mean") for image in bench.display]
        sizes: list[int] = []

        def probabilities(x: torch.Tensor) -> torch.Tensor:
            sizes.append(len(x))
            with torch.no_grad():
                output = loaded.module(bench.preprocessing.normalise(x).to(device))
                return to_probabilities(output, OutputKind.LOGITS).cpu()

        calls = [int(probabilities(image[None]).argmax()) for image in bench.display]
        found: list[SegmentCounterfactual] = []

        def search() -> object:
            sizes.clear()
            found.clear()
            for image, labels, fill, call in zip(
                bench.display, segments, fills, calls, strict=True
            ):
                found.append(segment_counterfactual(
                    image, labels, fill, probabilities, call, MAX_SIZE, MAX_PASSES, args.batch_size
                ))  # fmt: skip
            return None

        search()
        recorded = list(sizes)
        made = {n: bench.inputs[:1].expand(n, -1, -1, -1).contiguous() for n in set(recorded)}

        def floor() -> object:
            with torch.no_grad():
                for n in recorded:
                    loaded.module(made[n])
            return None

        times = median_times({"search": search, "floor": floor}, args.repeats, 1, device)
    print(machine(device))
    passes = sum(c.passes for c in found)
    valid = sum(c.valid for c in found)
    print(
        f"{args.arch} at {args.image_size} px, {len(found)} images, {SEGMENTS} segments asked, "
        f"batch {args.batch_size}, caps {MAX_SIZE} segments and {MAX_PASSES} passes"
    )
    print(f"search {times['search']:.3f} s  pass floor {times['floor']:.3f} s")
    print(f"ratio search / pass floor: {times['search'] / times['floor']:.2f} (goal <= 1.15)")
    print(
        f"forward passes per counterfactual: {passes / max(1, len(found)):.1f} "
        f"({len(recorded)} batches); valid: {valid} of {len(found)}"
    )


if __name__ == "__main__":
    main()
