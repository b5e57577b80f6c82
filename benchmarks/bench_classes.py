"""Audit time with many classes as a ratio to the same audit with few. Goal: <= 2.

One process, the same ``--images`` synthetic images, the same small CNN (two
convolutions, global pooling, a linear head) with ``--baseline-classes`` and with
``--classes`` outputs, same seed and settings; the class names are given on the command
line as a user would (``--classes benign,malignant,c0002,...``), so the command and the
resolved configuration grow with the class count too. Each audit is a whole
``run_audit``: evaluation, every method in ``--methods``, the trust checks, the report,
the PDF. One untimed warm-up audit, then ``--repeats`` rounds alternating the two;
medians and their ratio are printed, with what grows with the class count
(``metrics.json``, ``report.pdf``, ``predictions.csv``).

With ``--multi-label`` the model's outputs are labels (a sigmoid each) and each image's
label cell is a seeded random set of them (each label on an image with probability
0.3, ``-`` for none), written as a manifest beside the images for each label count: the
per-label analyses (metrics, calibration, dependence, subgroups, the operating point,
TCAV and maximisation of each label) grow with the labels.

    python benchmarks/bench_classes.py [--classes 1000] [--baseline-classes 10]
        [--images 50] [--methods all] [--explain-samples 32] [--repeats 1]
        [--multi-label]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from timing import machine  # benchmarks/, next to this file
from torch import nn

from auditor.config import resolve_config
from auditor.load import resolve_device
from auditor.pipeline import run_audit
from auditor.synthetic import write_dataset


class SmallNet(nn.Module):
    """Two convolutions, global average pooling, a linear head of ``classes`` outputs."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _model(folder: Path, classes: int) -> Path:
    torch.manual_seed(0)
    path = folder / f"classes{classes}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(SmallNet(classes).eval()).save(str(path))
    return path


def _names(classes: int, multi_label: bool) -> str:
    """The data's two classes first, then made-up ones (a multi-label model's: made-up
    labels)."""
    if multi_label:
        return ",".join(f"l{k:04d}" for k in range(classes))
    return ",".join(["benign", "malignant"] + [f"c{k:04d}" for k in range(2, classes)])


def _label_manifest(manifest: Path, names: str) -> Path:
    """A copy of ``manifest`` (beside it) whose label cells are seeded random sets of
    ``names``, each on an image with probability 0.3."""
    labels = names.split(",")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(len(labels))
    for row in rows:
        row["label"] = ";".join(n for n in labels if rng.random() < 0.3) or "-"
    path = manifest.with_name(f"labels{len(labels)}.csv")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _audit(model: Path, data: Path, names: str, args: argparse.Namespace, out: Path) -> Path:
    overrides = {
        "model": model,
        "data": data,
        "out": out,
        "device": args.device,
        "image_size": args.image_size,
        "explain_samples": args.explain_samples,
        "classes": tuple(names.split(",")),
    }
    if args.methods != "all":
        overrides["methods"] = tuple(args.methods.split(","))
    config = resolve_config(None, overrides)
    command = f"auditor run --model {model} --data {data} --classes {names}"
    return run_audit(config, command)


def _sizes(folder: Path) -> str:
    files = ("metrics.json", "report.pdf", "predictions.csv")
    return ", ".join(f"{name} {(folder / name).stat().st_size / 1024:,.0f} KiB" for name in files)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--baseline-classes", type=int, default=10)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--methods", default="all", help="comma-separated keys, or all")
    parser.add_argument("--explain-samples", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--multi-label", action="store_true", help="labels, not classes")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        written = write_dataset(root / "val", "val", args.images, seed=0)
        counts = {"few": args.baseline_classes, "many": args.classes}
        models = {key: _model(root, n) for key, n in counts.items()}
        names = {key: _names(n, args.multi_label) for key, n in counts.items()}
        data = {
            key: _label_manifest(written, names[key]) if args.multi_label else written
            for key in counts
        }
        print(machine(resolve_device(args.device)))
        _audit(models["few"], data["few"], names["few"], args, root / "warmup")
        times: dict[str, list[float]] = {"few": [], "many": []}
        folders: dict[str, Path] = {}
        for _ in range(args.repeats):
            for key in times:
                start = time.perf_counter()
                folders[key] = _audit(models[key], data[key], names[key], args, root / key)
                times[key].append(time.perf_counter() - start)
        medians = {key: statistics.median(values) for key, values in times.items()}
        unit = "labels" if args.multi_label else "classes"
        for key in times:
            print(f"{counts[key]:>6,} {unit}: {medians[key]:8.2f} s  ({_sizes(folders[key])})")
    ratio = medians["many"] / medians["few"]
    print(f"ratio {counts['many']:,} / {counts['few']:,} {unit}: {ratio:.2f} (goal <= 2)")
    return medians


if __name__ == "__main__":
    main()
