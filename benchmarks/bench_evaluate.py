"""Evaluation-stage throughput as a ratio to a bare ``for x in loader: model(x)`` loop.

Both run in this process on the same model, data, loader settings, batch size and
device, alternating, several times; the ratio of medians is printed. Goal: >= 0.9.

    python benchmarks/bench_evaluate.py [--model M.pt --data DATA] [--device cpu]
        [--batch-size 32] [--images 2048] [--repeats 3] [--workers 0]

Without --model/--data it uses the bundled sample model on its synthetic data.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from auditor.config import resolve_config
from auditor.data import discover
from auditor.evaluate import evaluate, probe_output_kind
from auditor.images import Preprocessing, make_loader
from auditor.load import load_model, resolve_device
from auditor.resources import resource_path
from auditor.synthetic import write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=2048, help="synthetic images when no --data")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()
    model_path = args.model or resource_path("sample_models", "sample_cnn.pt")
    data = args.data or write_dataset(Path(scratch.name) / "val", "val", args.images, seed=0)
    config = resolve_config(
        None,
        {
            "model": model_path,
            "data": data,
            "device": args.device,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "workers": args.workers,
        },
    )
    model = load_model(config.model, resolve_device(config.device))
    dataset = discover(config.data, config.classes)
    preprocessing = Preprocessing(model.in_channels, config.image_size, config.mean, config.std)
    kind = probe_output_kind(model, dataset, preprocessing)

    def bare() -> None:
        loader = make_loader(dataset.samples, preprocessing, config.batch_size, config.workers)
        with torch.inference_mode():
            for batch in loader:
                model.module(batch.images.to(model.device))
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)

    def stage() -> None:
        evaluate(model, dataset, preprocessing, kind, config)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)

    bare()  # warm-up: file cache, TorchScript's profiling runs
    stage()
    times: dict[str, list[float]] = {"bare": [], "stage": []}
    for _ in range(args.repeats):
        for name, run in (("bare", bare), ("stage", stage)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    n = len(dataset.samples)
    bare_rate = n / statistics.median(times["bare"])
    stage_rate = n / statistics.median(times["stage"])
    print(
        f"model {config.model.name}, {n} images, batch {config.batch_size}, device {model.device}, "
        f"{torch.get_num_threads()} threads, workers {config.workers}"
    )
    print(f"bare loop:        {bare_rate:8.1f} images/s (median of {args.repeats})")
    print(f"evaluation stage: {stage_rate:8.1f} images/s (median of {args.repeats})")
    print(f"evaluation / bare throughput: {stage_rate / bare_rate:.3f} (goal >= 0.9)")
    scratch.cleanup()


if __name__ == "__main__":
    main()
