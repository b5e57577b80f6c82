"""Evaluation-stage throughput as a ratio to a bare ``for x in loader: model(x)`` loop.

Both run in this process on the same model, data, loader settings, batch size and
device, alternating, several times; the ratio of medians is printed. Goal: >= 0.9.
The stage runs as an audit runs it, keeping each image's embedding (the last linear
layer's input, tapped in the same pass); it also runs without, and the cost of the
embeddings is printed as the ratio of the two. Goal: <= 1.05.

With ``--precision bf16`` (or fp16) it also times the stage under autocast and prints
its throughput against float32's and the calls that changed. On CUDA it ends with the
peak GPU memory.

    python benchmarks/bench_evaluate.py [--model M.pt | --arch resnet50] [--data DATA]
        [--device cpu] [--batch-size 32] [--images 2048] [--repeats 3] [--workers 0]
        [--precision bf16]

Without --model/--arch it uses the bundled sample model, and without --data that
model's synthetic data; --arch scripts torchvision's architecture with random weights
and two outputs (default image size 224).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from timing import peak_memory  # benchmarks/, next to this file

from auditor.config import resolve_config
from auditor.data import discover
from auditor.evaluate import EvaluationSettings, evaluate, probe_output_kind
from auditor.images import Preprocessing, make_loader
from auditor.load import load_model, resolve_device
from auditor.resources import resource_path
from auditor.similarity.embeddings import embedding_site
from auditor.synthetic import write_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path)
    parser.add_argument("--arch", help="torchvision model, random weights, 2 outputs")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=2048, help="synthetic images when no --data")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--precision", choices=("bf16", "fp16"), help="also time autocast")
    args = parser.parse_args(argv)

    scratch = tempfile.TemporaryDirectory()
    model_path = args.model or resource_path("sample_models", "sample_cnn.pt")
    if args.arch:
        model_path = Path(scratch.name) / f"{args.arch}.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eager = getattr(torchvision.models, args.arch)(num_classes=2).eval()
            torch.jit.script(eager).save(str(model_path))
        args.image_size = args.image_size or 224
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

    site = embedding_site(model, None)

    def stage() -> None:
        evaluate(model, dataset, preprocessing, kind, config.evaluation, site)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)

    def plain() -> None:
        evaluate(model, dataset, preprocessing, kind, config.evaluation)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)

    runs = {"bare": bare, "stage": stage, "plain": plain}
    calls: dict[str, np.ndarray] = {}
    if args.precision:
        reduced = dataclasses.replace(config.evaluation, precision=args.precision)

        def calls_at(name: str, settings: EvaluationSettings) -> Callable[[], None]:
            def run() -> None:
                result = evaluate(model, dataset, preprocessing, kind, settings)
                calls[name] = result.predictions["prediction"].to_numpy()
                if model.device.type == "cuda":
                    torch.cuda.synchronize(model.device)

            return run

        runs["fp32"] = calls_at("fp32", config.evaluation)
        runs[args.precision] = calls_at(args.precision, reduced)
    for run in runs.values():  # warm-up: file cache, TorchScript's profiling runs
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
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
    with_embeddings = statistics.median(times["stage"]) / statistics.median(times["plain"])
    print(f"embedding: {site.description if site else 'none found'}")
    print(f"evaluation time with / without embeddings: {with_embeddings:.3f} (goal <= 1.05)")
    if args.precision:
        speed = statistics.median(times["fp32"]) / statistics.median(times[args.precision])
        changed = int((calls["fp32"] != calls[args.precision]).sum())
        print(
            f"{args.precision} autocast / float32 throughput: {speed:.3f}; calls changed: "
            f"{changed} of {len(calls['fp32'])}"
        )
    print(peak_memory(model.device))
    scratch.cleanup()


if __name__ == "__main__":
    main()
