"""Trust metrics: Auditor's cost against Quantus's on the same metric and inputs.

One process, one model (a torchvision architecture with random weights, scripted to
TorchScript and loaded with ``load_model`` for Auditor; its eager twin behind the same
normalisation for Quantus, which reads images in [0, 1]), the same synthetic images and
the same maps. Every measured run gets ``--warmup`` untimed runs, then the median of
``--repeats`` runs, Auditor, floor passes and Quantus interleaved. Times are per image.

* **Deletion and insertion curves** of ``--maps`` maps per image (random rankings of the
  pixels, the same for both; Auditor's trust stage curves each method's map plus a
  random one). Auditor: per image, ``pixel_order`` and ``curves``, which computes both
  curves of all maps at once (the two end points shared, the ``2 M (S - 1) + 3`` images
  run at the measured forward batch). Quantus (``PixelFlipping`` with
  ``features_in_step = 3 H W / S``, ``perturb_baseline=0.0``, no normalising, no abs,
  ``softmax=True``, its default batch of 64 images), called once per map set on all
  images: the deletion curve, then the insertion curve as ``PixelFlipping`` of the
  blurred image (Auditor's blur) with a ``perturb_func`` that puts the original values
  back, as PixelFlipping has no insertion. Both compute the same curves: the largest
  difference is printed. Quantus asserts ``H W % features_in_step == 0``, counting
  pixels where ``features_in_step`` counts values of all channels, which refuses every
  ``S`` not a multiple of 3; the bench lifts that assert (a check, no computation) when
  it would refuse. **Auditor / floor**: over ``2 M (S - 1) + 3`` bare forward passes per
  image (``module(x)`` under ``no_grad`` on the TorchScript module) at the same batch.
* **Map instability** of the saliency map, ``--samples`` noisy copies per image (uniform
  noise of radius ``--radius``), end to end, each side computing its own maps of the
  noisy images; the maps of the original images are given to both. Auditor:
  ``stability_check`` (``noisy_copies``, ``recompute`` in batches of ``--batch-size``,
  ``map_instability``). Quantus: ``MaxSensitivity`` (``normalise=True``, per map), its
  default noise of the same radius, its default batch, and an ``explain_func`` running
  Captum's ``Saliency`` on the eager twin as Auditor defines the map (gradient of the
  normalised input, absolute, maximum over channels). The noise draws differ, so the
  mean map instability of each side is printed as a check, not expected to be equal.

* **The trust stage against the explain stage** of a whole audit (``auditor run`` on
  ``--audit-images`` synthetic images, ``--audit-explain`` of them sampled for the
  explain stage, every method, the trust checks at their defaults, the stages that do
  not bear on the ratio switched off): the plan's passes (forward-pass units), the
  ratio under ``trust-budget`` and the full protocol's planned ratio, and the two
  stages' measured times and their ratio.

No thresholds: it reports.

    python benchmarks/bench_trust.py [--arch resnet18] [--image-size 224] [--images 8]
        [--maps 4] [--steps 16] [--samples 5] [--device auto] [--repeats 3] [--quick]
        [--audit-images 9] [--audit-explain 1] [--budget 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import quantus
import torch
from numpy.typing import NDArray
from quantus.helpers import asserts as quantus_asserts
from timing import Run, machine, median_times, peak_memory, subject  # benchmarks/
from torch import nn

from auditor.config import resolve_config
from auditor.events import durations
from auditor.explain import ExplainContext, ExplainSettings, Method
from auditor.explain.batching import measure_batch_size
from auditor.explain.engine import attribute_batch, build_context
from auditor.explain.integrated_gradients import blurred
from auditor.explain.store import MapStore
from auditor.load import OutputKind
from auditor.measure.checks import stability_check
from auditor.measure.faithfulness import curves, pixel_order
from auditor.measure.records import TrustCase, TrustSettings
from auditor.pipeline import run_audit
from auditor.synthetic import write_dataset

FULL = {"images": 8, "image_size": 224, "steps": 16, "samples": 5, "repeats": 3, "warmup": 1,
        "audit_images": 9}  # fmt: skip
QUICK = {"images": 2, "image_size": 16, "steps": 4, "samples": 2, "repeats": 1, "warmup": 0,
         "audit_images": 4}  # fmt: skip
Floats = NDArray[np.float64]


class Normalised(nn.Module):
    """The eager twin behind Auditor's normalisation: Quantus's model reads images in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, module: nn.Module, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.normalise(x))


def captum_saliency(model: Normalised, inputs: Any, targets: Any, **_: Any) -> NDArray[np.float32]:
    """Quantus's ``explain_func``: ``(N, H, W)`` saliency as Auditor defines it, by Captum."""
    from captum.attr import Saliency

    device = model.mean.device
    x = model.normalise(torch.as_tensor(np.asarray(inputs), device=device))
    target = torch.as_tensor(np.asarray(targets), device=device)
    grads = Saliency(model.module).attribute(x, target=target, abs=True)
    return grads.amax(dim=1).detach().cpu().numpy()


class PutBack:
    """Quantus ``perturb_func`` for insertion: the original values return at the indices.

    Quantus calls it ``steps`` times per batch of images, batches in order.
    """

    def __init__(self, originals: NDArray[np.float32], steps: int) -> None:
        self.originals, self.steps = originals.reshape(len(originals), -1), steps
        self.calls = self.start = self.rows = 0

    def reset(self) -> None:
        self.calls = self.start = self.rows = 0

    def __call__(self, arr: NDArray, indices: NDArray, **_: Any) -> NDArray:
        if self.calls and self.calls % self.steps == 0:
            self.start += self.rows  # a new batch
        self.calls, self.rows = self.calls + 1, len(arr)
        rows = np.arange(len(arr))[:, None]
        source = self.originals[self.start : self.start + len(arr)]
        out = arr.copy()
        out[rows, indices] = source[rows, indices]
        return out


@contextlib.contextmanager
def features_assert_lifted(needed: bool) -> Iterator[None]:
    """Quantus's ``H W % features_in_step`` assert off, where it would refuse the steps."""
    if not needed:
        yield
        return
    with mock.patch.object(quantus_asserts, "assert_features_in_step", lambda **_: None):
        yield


@dataclass
class Setup:
    context: ExplainContext
    saliency: list[Method]
    quantus_model: Normalised
    display: torch.Tensor  # (N, C, H, W) in [0, 1], on the CPU
    inputs: torch.Tensor  # normalised, on the device
    targets: torch.Tensor  # the eager twin's predicted classes, on the CPU
    classes: int

    def bare_forward(self, size: int) -> Run:
        """One bare forward pass of ``size`` images (the images repeated)."""
        x = self.inputs[torch.arange(size, device=self.inputs.device) % len(self.inputs)]

        @torch.no_grad()
        def run() -> object:
            return self.context.model.module(x)

        run()  # TorchScript optimises on the second call: with the warm-up run, before timing
        return run


def build(args: argparse.Namespace, eager: nn.Module | None, folder: Path) -> Setup:
    made = subject(
        args.arch, args.classes, args.image_size, args.images, args.device, eager, folder
    )
    model, eager, preprocessing = made.model, made.eager, made.preprocessing
    display, inputs, device = made.display, made.inputs, made.inputs.device
    mean, std = preprocessing.mean or (), preprocessing.std or ()
    with torch.no_grad():
        output = eager(inputs)
    settings = ExplainSettings(methods=("saliency",))
    context, saliency, _ = build_context(model, OutputKind.LOGITS, None, settings, preprocessing)

    @torch.no_grad()
    def forward(x: torch.Tensor) -> object:  # as measure_batches, which the explain stage runs
        return context.class_scores(x)

    context.forward_batch = measure_batch_size(forward, inputs[0])
    context.mean_colour = display.mean(dim=(0, 2, 3))
    wrapped = Normalised(eager, mean, std).to(device).eval()
    targets = output.argmax(dim=1).cpu()
    return Setup(context, saliency, wrapped, display, inputs, targets, int(output.shape[1]))


def deletion(setup: Setup, args: argparse.Namespace) -> tuple[dict[str, Run], dict, dict]:
    """The runs of the curves, the floor's pass counts, and where the results go."""
    n, m, steps = len(setup.display), args.maps, args.steps
    channels, height, width = setup.display.shape[1:]
    pixels = height * width
    rng = np.random.default_rng(0)
    ranks = np.stack([rng.permutation(pixels) for _ in range(n * m)])  # no ties
    maps = ranks.reshape(n, m, height, width).astype(np.float32)
    results: dict[str, Any] = {}

    def auditor() -> object:
        out = []
        for i in range(n):
            orders = pixel_order(torch.from_numpy(maps[i]), torch.Generator().manual_seed(i))
            target = int(setup.targets[i])
            out.append(curves(setup.context, setup.display[i], target, orders, steps))
        results["auditor"] = out
        return out

    x = setup.display.numpy()
    y = setup.targets.numpy()
    options: dict[str, Any] = {"normalise": False, "abs": False, "disable_warnings": True}
    options |= {"features_in_step": channels * pixels // steps, "perturb_baseline": 0.0}
    put_back = PutBack(x, steps)
    delete = quantus.PixelFlipping(**options)
    insert = quantus.PixelFlipping(**options, perturb_func=put_back)
    call: dict[str, Any] = {
        "y_batch": y,
        "channel_first": True,
        "softmax": True,
        "device": str(device_of(setup)),
    }

    def quantus_curves(insertion: bool) -> list:
        out = []
        start = blurred(setup.display).numpy() if insertion else x
        for j in range(m):
            a = maps[:, j : j + 1].copy()
            if insertion:
                put_back.reset()
                out.append(insert(setup.quantus_model, x_batch=start, a_batch=a, **call))
            else:
                out.append(delete(setup.quantus_model, x_batch=start, a_batch=a, **call))
        return out

    def both() -> object:
        results["quantus"] = (quantus_curves(False), quantus_curves(True))
        return results["quantus"]

    def deletion_only() -> object:
        return quantus_curves(False)

    passes = 2 * m * (steps - 1) + 3
    batch = max(1, setup.context.forward_batch)
    floor: dict[str, int] = {}
    runs = {"auditor curves": auditor, "quantus curves": both, "quantus deletion": deletion_only}
    for size, count in ((batch, passes // batch), (passes % batch, 1)):
        if size and count:
            runs[f"f {size}"] = setup.bare_forward(size)
            floor[f"f {size}"] = count
    return runs, floor, results


def device_of(setup: Setup) -> torch.device:
    return setup.context.model.device


def curve_gap(results: dict) -> float:
    """Largest difference between Auditor's curves and Quantus's, points after the first."""
    ours = np.stack([np.stack(pair) for pair in results["auditor"]])  # (N, 2, M, S + 1)
    deletion, insertion = (np.asarray(part, dtype=np.float64) for part in results["quantus"])
    theirs = np.stack([deletion, insertion]).transpose(2, 0, 1, 3)  # (M, N, S) → (N, 2, M, S)
    return float(np.abs(ours[..., 1:] - theirs).max())


def stability(setup: Setup, args: argparse.Namespace) -> tuple[dict[str, Run], dict]:
    """The runs of map instability, and where the results go."""
    n = len(setup.display)
    seeds = list(range(n))
    found = attribute_batch(setup.context, setup.saliency, setup.display, setup.targets, seeds)
    original = found["saliency"]
    if isinstance(original, str):
        raise RuntimeError(f"saliency failed: {original}")
    cases = [
        TrustCase(i, "sampled", "predicted", int(t), d)
        for i, (t, d) in enumerate(zip(setup.targets, setup.display, strict=True))
    ]
    names = tuple(str(k) for k in range(setup.classes))
    maps = MapStore()
    for case in cases:
        maps.put(case, "saliency", original[case.index])
    settings = TrustSettings(stability_samples=args.samples, stability_radius=args.radius)
    results: dict[str, Any] = {}

    def auditor() -> object:
        frame = stability_check(
            setup.context, setup.saliency, cases, names, maps, settings, args.batch_size
        )
        results["auditor"] = frame["value"].to_numpy(dtype=np.float64)
        return frame

    metric = quantus.MaxSensitivity(
        nr_samples=args.samples,
        lower_bound=args.radius,
        normalise=True,
        normalise_func_kwargs={"normalise_axes": (1, 2, 3)},
        disable_warnings=True,
    )
    x, y, a = setup.display.numpy(), setup.targets.numpy(), original[:, None].copy()

    def peer() -> object:
        scores = metric(
            setup.quantus_model,
            x,
            y,
            a,
            explain_func=captum_saliency,
            channel_first=True,
            device=str(device_of(setup)),
        )
        results["quantus"] = np.asarray(scores, dtype=np.float64)
        return scores

    check = captum_saliency(setup.quantus_model, x, y)
    results["map gap"] = float(np.abs(check - original).max() / np.abs(original).max())
    return {"auditor instability": auditor, "quantus instability": peer}, results


def metric_line(name: str, auditor: float, peer: float, n: int, floor: float | None) -> str:
    line = (
        f"{name:<19} auditor {auditor / n:.4g} s/image  quantus {peer / n:.4g} s/image  "
        f"quantus/auditor {peer / auditor:.2f}"
    )
    return line + (f"  auditor/floor {auditor / floor:.2f}" if floor else "")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--arch", default="resnet18", help="torchvision model, random weights (resnet18)")
    add("--classes", type=int, default=1000, help="outputs of the model (1000)")
    add("--image-size", type=int, help="side in pixels; the steps must divide its square (224)")
    add("--images", type=int, help="synthetic images (8)")
    add("--maps", type=int, default=4, help="maps per image for the curves (4)")
    add("--steps", type=int, help="points of each curve after the first (16)")
    add("--samples", type=int, help="noisy copies per image for map instability (5)")
    add("--radius", type=float, default=TrustSettings().stability_radius, help="noise bound")
    add("--batch-size", type=int, default=32, help="images per recompute batch (32)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto: cuda if present)")
    add("--repeats", type=int, help="timed runs per measurement; the median is shown (3)")
    add("--warmup", type=int, help="untimed runs before them (1)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    add("--threads", type=int, default=cores, help=f"torch threads ({cores})")
    add("--audit-images", type=int, help="images of the whole-audit ratio (9)")
    add("--audit-explain", type=int, default=1, help="its explain-samples (1)")
    add("--budget", type=float, default=TrustSettings().trust_budget, help="its trust-budget")
    add("--quick", action="store_true", help="smoke test: " + str(QUICK).replace("'", ""))
    args = parser.parse_args(argv)
    for name, full in FULL.items():
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick else full)
    if args.audit_explain < 1 or args.audit_images < 2:
        parser.error("--audit-explain must be at least 1 and --audit-images at least 2")
    if args.steps < 2 or (args.image_size**2) % args.steps:
        parser.error(f"--steps must be at least 2 and divide {args.image_size}² pixels")
    return args


def audit_ratios(args: argparse.Namespace, folder: Path, outputs: int) -> str:
    """Audit the benchmark's model (saved in ``folder``) on synthetic images; print the
    trust stage's passes and time against the explain stage's, return the summary."""
    data = write_dataset(folder / "audit-data", "val", args.audit_images, seed=0)
    flags = {
        "model": folder / "model.pt", "data": data, "out": folder / "audit", "device": args.device,
        "image_size": args.image_size, "explain_samples": args.audit_explain,
        "robustness_images": 0, "dissection_images": 0, "tcav_runs": 0, "maximise_steps": 0,
        "counterfactual_images": 0, "history": "-", "trust_budget": args.budget,
        "format": ("md",),  # the ratios read metrics.json; no PDF (nor Pango) needed
        # the synthetic images' two classes are the model's first two outputs
        "classes": ("benign", "malignant", *(f"class {k}" for k in range(2, outputs))),
    }  # fmt: skip
    run = run_audit(resolve_config(None, flags), command="bench_trust")
    seconds = durations()
    plan = json.loads((run / "metrics.json").read_text())["trust"]["plan"]
    explain, trust = plan["explain_passes"], plan["trust_passes"]
    sampled = [key for key, p in plan["protocols"].items() if p != plan["full"]]
    print(
        f"audit: {args.audit_images} images, {args.audit_explain} sampled for the explain "
        f"stage, every method; trust-budget {args.budget:g}"
    )
    print(
        f"  passes (forward-pass units): explain {explain:,}, trust {trust:,}; full protocol "
        f"{plan['full_protocol_passes']:,} ({plan['full_protocol_passes'] / explain:.2f} x "
        f"explain); sampled: {', '.join(sampled) or 'none'}"
    )
    print(f"  seconds: explain {seconds['explain']:.3g}, trust {seconds['trust']:.3g}")
    return (
        f"trust/explain passes {trust / explain:.2f} (budget {args.budget:g}), "
        f"time {seconds['trust'] / seconds['explain']:.2f}"
    )


def main(argv: list[str] | None = None, model: nn.Module | None = None) -> None:
    """Run the benchmark; ``model`` (an eager module) replaces ``--arch``, for tests."""
    args = parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Quantus's warnings about its own parameters
            setup = build(args, model, Path(folder))
            device = device_of(setup)
            n, side = args.images, args.image_size
            channels = setup.display.shape[1]
            lifted = (side * side) % (channels * side * side // args.steps) != 0
            print(machine(device))
            name = type(model).__name__ if model else args.arch
            print(
                f"model {name} (random weights), {side} px, {n} images; measured forward "
                f"batch {setup.context.forward_batch}; median of {args.repeats} after "
                f"{args.warmup} warm-up; times per image"
            )
            print(
                f"curves: {args.maps} maps per image, {args.steps} steps; map instability: "
                f"saliency, {args.samples} samples, radius {args.radius:g}, recompute batch "
                f"{args.batch_size}" + ("; Quantus's features_in_step assert lifted" * lifted)
            )
            runs, floor_counts, curve_results = deletion(setup, args)
            instability_runs, instability_results = stability(setup, args)
            with features_assert_lifted(lifted):
                times = median_times(runs | instability_runs, args.repeats, args.warmup, device)
            auditor, peer = times["auditor curves"], times["quantus curves"]
            floor = n * sum(count * times[key] for key, count in floor_counts.items())
            print(metric_line("deletion+insertion", auditor, peer, n, floor))
            passes = 2 * args.maps * (args.steps - 1) + 3
            print(
                f"  quantus deletion alone {times['quantus deletion'] / n:.4g} s/image; "
                f"floor {floor / n:.4g} s/image ({passes} forward passes); "
                f"max |auditor - quantus| over the curves {curve_gap(curve_results):.2g}"
            )
            s_auditor, s_peer = times["auditor instability"], times["quantus instability"]
            print(metric_line("map instability", s_auditor, s_peer, n, None))
            ours, theirs = instability_results["auditor"], instability_results["quantus"]
            print(
                f"  mean map instability auditor {np.nanmean(ours):.3g}, quantus "
                f"{np.nanmean(theirs):.3g} (different noise); saliency maps max |difference| "
                f"{instability_results['map gap']:.2g} x max"
            )
            stages = audit_ratios(args, Path(folder), setup.classes)
            print(
                f"summary: quantus/auditor {peer / auditor:.2f} on the curves, "
                f"{s_peer / s_auditor:.2f} on map instability; auditor/floor "
                f"{auditor / floor:.2f} on the curves; {stages}"
            )
            print(peak_memory(device))
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
