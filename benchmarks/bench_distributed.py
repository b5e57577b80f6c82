"""Speed-up of a sharded audit: ``torchrun --nproc-per-node N -m auditor run`` against
one process, side by side on the same data, model and flags.

The bundled sample model audits ``--images`` synthetic dermoscopy images, with
``--explain-samples`` sampled and misclassified images explained by every method and
the trust checks on; the stages that are not shared (robustness, network dissection,
counterfactuals) are switched off, so that the run is the shared stages (evaluation,
explanations, trust checks) plus what every audit does (load, clinical analysis,
similarity, writing ``summary.md``). Three runs:

* N ranks, each with ``cores / N`` threads;
* one process with as many threads as one rank: the speed-up of the split itself (what
  N GPUs or N machines get), and the run whose files the sharded run must equal, byte
  for byte (floating-point sums depend on the thread count, so only this one can);
* one process with every core: what sharding gains on this machine.

Each stage's time is read from the run's ``--log-json`` events (rank 0's).

    python benchmarks/bench_distributed.py [--images 2000] [--explain-samples 8]
        [--processes 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from timing import machine  # benchmarks/, next to this file

from auditor.load import resolve_device
from auditor.resources import resource_path
from auditor.synthetic import write_dataset

SHARED = ("evaluate", "explain", "trust")
"""The stages the ranks share; the others run on rank 0 alone."""

COMPARED = ("predictions.csv", "metrics.json", "explanations.csv", "trust.csv")


def _audit(command: list[str], out: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Run ``command`` (an ``auditor run`` without ``--out``); its wall time and the
    seconds of each stage, from its events."""
    events = out.parent / f"{out.name}.jsonl"
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--out", str(out), "--log-json", str(events)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the audit failed: {done.stderr.strip().splitlines()[-1]}")
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    return seconds, {e["stage"]: e["seconds"] for e in lines if e["event"] == "stage_end"}


def _numbers(value: object, path: str = "") -> dict[str, float]:
    """Every number in a JSON value, by its path."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {k: v for key, item in items for k, v in _numbers(item, f"{path}/{key}").items()}
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {path: float(value)} if number else {}


def _compared(first: Path, second: Path) -> str:
    """Whether two run folders' data files hold the same bytes; where not, how far apart
    their numbers are."""
    (a,), (b,) = list(first.iterdir()), list(second.iterdir())
    differ = [name for name in COMPARED if (a / name).read_bytes() != (b / name).read_bytes()]
    if not differ:
        return f"same bytes ({', '.join(COMPARED)})"
    with np.load(a / "explanations.npz") as left, np.load(b / "explanations.npz") as right:
        maps = max(
            float(np.abs(left[k] - right[k]).max() / max(np.abs(left[k]).max(), 1e-30))
            for k in left.files
            if left[k].dtype.kind == "f"
        )
    records = [pd.read_csv(f / "trust_records.csv")["value"] for f in (a, b)]
    numbers = [_numbers(json.loads((f / "metrics.json").read_text())) for f in (a, b)]
    worst = max(numbers[0], key=lambda k: abs(numbers[0][k] - numbers[1].get(k, np.nan)))
    gap = abs(numbers[0][worst] - numbers[1][worst])
    return (
        f"differ in {', '.join(differ)}: maps by at most {maps:.1e} of their largest value, "
        f"trust measurements by {float((records[0] - records[1]).abs().max()):.1e}, "
        f"metrics.json by {gap:.1e} (at {worst})"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--explain-samples", type=int, default=8)
    parser.add_argument("--methods", default="all", help="comma-separated keys, or all")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.processes)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = write_dataset(root / "val", "val", args.images, seed=0)
        flags = [
            "--model", str(resource_path("sample_models", "sample_cnn.pt")), "--data", str(data),
            "--explain-samples", str(args.explain_samples), "--batch-size", str(args.batch_size),
            "--device", args.device, "--format", "md", "--history", "-",
            "--robustness-images", "0", "--dissection-images", "0",
            "--counterfactual-images", "0",
        ]  # fmt: skip
        if args.methods != "all":
            flags += ["--methods", args.methods]
        one = [sys.executable, "-m", "auditor", "run", *flags]
        ranks = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(args.processes), "-m", "auditor", "run", *flags,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        narrow = env | {"OMP_NUM_THREADS": str(threads)}
        print(machine(resolve_device(args.device)))
        print(
            f"{args.images} images, {args.explain_samples} sampled and misclassified explained, "
            f"methods {args.methods}"
        )
        runs = {
            f"{args.processes} x {threads} threads": (ranks, narrow),
            f"1 x {threads} threads": (one, narrow),
            f"1 x {cores} threads": (one, env),
        }
        walls, stages = {}, {}
        for number, (name, (command, environment)) in enumerate(runs.items()):
            walls[name], stages[name] = _audit(command, root / str(number), environment)
        names = list(runs)
        print(f"{'seconds':<16}" + "".join(f"{name:>18}" for name in names))
        for stage in stages[names[0]]:
            print(f"{stage:<16}" + "".join(f"{stages[n][stage]:>18.1f}" for n in names))
        print(f"{'whole run':<16}" + "".join(f"{walls[n]:>18.1f}" for n in names))
        shared = {n: sum(stages[n][s] for s in SHARED) for n in names}
        speedups = {}
        for reference in names[1:]:
            speedups[reference] = shared[reference] / shared[names[0]]
            whole = walls[reference] / walls[names[0]]
            print(
                f"speed-up of {names[0]} over {reference}: shared stages (evaluate, explain, "
                f"trust) {speedups[reference]:.2f}, whole run {whole:.2f}"
            )
        print(f"run folders of {names[0]} and {names[1]}: {_compared(root / '0', root / '1')}")
    return speedups


if __name__ == "__main__":
    main()
