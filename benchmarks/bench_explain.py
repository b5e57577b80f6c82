"""Explanation methods: Auditor's cost over its pass floor, and the peers' cost over Auditor's.

One process, one model (a torchvision architecture with random weights, scripted to
TorchScript for Auditor; its eager twin for the peers, whose module hooks TorchScript
rejects), the same synthetic images. Every measured run gets ``--warmup`` untimed runs,
then the median of ``--repeats`` runs, Auditor, floor passes and peers interleaved.

Per method (a context built for that method alone, as the explain stage would):

* **Auditor / floor**: Auditor's wall time (its gradient passes, if it reads them, plus
  ``attribute``) over the time of the passes the method needs: ``passes_per_image`` plus,
  for methods reading the shared passes, one forward+backward pass (CAM and Score-CAM:
  one forward, as they read activations only; the guided methods: one forward+backward,
  so their ratio includes Auditor's plain backward pass). Each pass kind is timed bare on
  the TorchScript module (``module(x)`` under ``no_grad``; ``module(x)`` + ``autograd.grad``
  of the summed target score w.r.t. the input) at the batch size Auditor measured for it
  (``measure_batches``); the passes of all images fill whole batches, the rest one batch.
* **peer / Auditor**, same images and settings. Captum: ``Saliency`` (abs),
  ``InputXGradient``, ``GuidedBackprop``, ``LayerGradCam`` (ReLU, bilinear upsampling),
  ``GuidedGradCam`` (bilinear), ``IntegratedGradients`` (same steps and baseline, default
  ``internal_batch_size``: all steps of all images in one pass), ``NoiseTunnel(Saliency)``
  (same samples, sigma = noise x the batch's value range, default ``nt_samples_batch_size``:
  all at once), ``Occlusion`` (same window, stride, zero fill), ``Lime`` (ridge alpha 1,
  cosine kernel width 0.25) and ``KernelShap`` per image on the same SLIC superpixels; the
  last three with the default ``perturbations_per_eval=1``. pytorch-grad-cam: ``GradCAM``,
  ``GradCAMPlusPlus``, ``ScoreCAM`` (its default batch 16). The ``lime`` package's
  ``LimeImageExplainer`` (same samples, kernel and SLIC superpixels, mean-colour fill, its
  default batch 10) if installed. SLIC runs inside every timed run that needs it.

Gradient methods (and CAM) run on ``--images`` images in one batch, the others on the
first ``--perturbation-images``. The last lines time the gradient family (saliency,
input x gradient, guided backprop, Grad-CAM, Grad-CAM++, guided Grad-CAM: one forward and
two backward passes, then six maps) over one forward+backward pass of the tapped
TorchScript model with gradients w.r.t. the input and the target layer; the peer figure
sums the fastest peer of each of the six, run one by one. No thresholds: it reports.

    python benchmarks/bench_explain.py [--arch resnet18] [--image-size 224] [--images 16]
        [--perturbation-images 4] [--device auto] [--repeats 3] [--methods a,b] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from explain_peers import peers  # benchmarks/, next to this file
from timing import Run, machine, median_times, peak_memory, subject  # benchmarks/
from torch import nn

from auditor.architecture import LayerInfo
from auditor.explain import (
    METHODS,
    Batch,
    ExplainContext,
    ExplainSettings,
    GradientMethod,
    Method,
    PassCount,
)
from auditor.explain.batching import measure_batches
from auditor.explain.engine import build_context
from auditor.explain.layers import choose_layer
from auditor.images import Preprocessing
from auditor.load import (
    LoadedModel,
    OutputKind,
    target_scores,
)

FAMILY_TEXT = (
    "saliency input-x-gradient guided-backprop grad-cam grad-cam-plus-plus guided-grad-cam"
)
FAMILY = tuple(FAMILY_TEXT.split())
ACTIVATIONS_ONLY = ("cam", "score-cam")  # read the shared passes' activations, no gradient
SETTINGS = ("ig_steps", "smoothgrad_samples", "superpixels", "lime_samples", "shap_samples")
FULL = {"images": 16, "perturbation_images": 4, "image_size": 224, "repeats": 3}
QUICK = {"images": 4, "perturbation_images": 2, "image_size": 32, "repeats": 1, "ig_steps": 4}
QUICK |= {"smoothgrad_samples": 4, "superpixels": 16, "lime_samples": 16, "shap_samples": 16}
QUICK |= {"occlusion_window": 8}
HEADER = ("method", "passes", "imgs", "Auditor", "floor", "Aud/floor", "peer", "peer", "peer/Aud")


@dataclass
class Setup:
    model: LoadedModel
    eager: nn.Module
    layer: str | None
    settings: ExplainSettings
    preprocessing: Preprocessing
    display: torch.Tensor  # (N, C, H, W) in [0, 1], on the CPU
    inputs: torch.Tensor  # normalised, on the device
    targets: torch.Tensor  # the eager model's predicted classes, on the device
    kind: OutputKind = OutputKind.LOGITS
    forward_batch: int = 32
    backward_batch: int = 32
    layer_channels: int = 0

    def context(self, keys: tuple[str, ...]) -> tuple[ExplainContext, list[Method], dict]:
        settings = replace(self.settings, methods=keys)
        made = build_context(self.model, self.kind, self.layer, settings, self.preprocessing)
        context = made[0]
        context.forward_batch, context.backward_batch = self.forward_batch, self.backward_batch
        context.layer_channels = self.layer_channels
        context.mean_colour = self.display.mean(dim=(0, 2, 3))
        return made

    def bare(self, backward: bool, size: int) -> Run:
        """One bare pass of ``size`` images (the images repeated) on the TorchScript module."""
        index = torch.arange(size, device=self.inputs.device) % len(self.inputs)
        x, targets = self.inputs[index], self.targets[index]

        @torch.no_grad()
        def forward() -> object:
            return self.model.module(x)

        def forward_backward() -> object:
            leaf = x.detach().requires_grad_(True)
            score = target_scores(self.model.module(leaf), self.kind, targets).sum()
            return torch.autograd.grad(score, leaf)

        run = forward_backward if backward else forward
        run()  # TorchScript optimises on the second call: with the warm-up run, before timing
        return run


def floor_passes(method: Method, context: ExplainContext, size: tuple[int, int]) -> PassCount:
    """The passes per image the method needs on its own."""
    extra = method.passes_per_image(context, size)
    if not method.needs_passes:
        return extra
    if method.key in ACTIVATIONS_ONLY:
        return PassCount(extra.forward + 1, extra.backward)
    return PassCount(extra.forward, extra.backward + 1)


def floor_runs(setup: Setup, passes: PassCount, n: int) -> tuple[dict[str, Run], dict[str, int]]:
    """Bare passes to time, and how many of each the floor for ``n`` images adds up to."""
    runs, counts = {}, {}
    for backward, total, size in (
        (False, passes.forward * n, setup.forward_batch),
        (True, passes.backward * n, setup.backward_batch),
    ):
        for batch, count in ((size, total // size), (total % size, 1)):
            if batch and count:
                name = f"{'fb' if backward else 'f'} {batch}"
                runs[name], counts[name] = setup.bare(backward, batch), count
    return runs, counts


def auditor_run(methods: list[Method], context: ExplainContext, setup: Setup, n: int) -> Run:
    x, display, targets = setup.inputs[:n], setup.display[:n], setup.targets[:n]

    def run() -> object:
        batch = Batch(x, display, targets, seeds=list(range(n)))
        if any(method.needs_passes for method in methods):
            batch.passes = context.passes(x, targets)
        return [method.attribute(batch, context) for method in methods]

    return run


def build(args: argparse.Namespace, eager: nn.Module | None, folder: Path) -> Setup:
    made = subject(
        args.arch,
        args.classes,
        args.image_size,
        max(args.images, args.perturbation_images),
        args.device,
        eager,
        folder,
    )
    model, eager, preprocessing = made.model, made.eager, made.preprocessing
    display, inputs = made.display, made.inputs
    sites = model.tapped.sites
    with torch.no_grad():
        targets = eager(inputs).argmax(dim=1)
        _, outputs = model.tapped(inputs[:1], [site.path for site in sites])
    layers = tuple(
        LayerInfo(site.path, site.type_name, tuple(output.shape[1:]), 0, 0, site.order)
        for site, output in zip(sites, outputs, strict=True)
    )
    chosen = choose_layer(model, layers, inputs[0], OutputKind.LOGITS)
    settings = ExplainSettings(methods=tuple(METHODS), occlusion_window=args.occlusion_window)
    settings = replace(settings, **{name: getattr(args, name) for name in SETTINGS})
    layer = args.layer or (chosen.path if chosen else None)
    setup = Setup(model, eager, layer, settings, preprocessing, display, inputs, targets)
    context, methods, _ = setup.context(tuple(METHODS))
    measure_batches(context, methods, inputs[0])
    setup.forward_batch, setup.backward_batch = context.forward_batch, context.backward_batch
    if layer:
        setup.layer_channels = int(context.passes(inputs[:1], targets[:1]).activations.shape[1])
    return setup


def row(*cells: object) -> str:
    widths = (20, 9, 4, 9, 9, 9, 33, 9, 8)
    aligned = [
        f"{cell:<{width}}" if i in (0, 1, 6) else f"{cell:>{width}}"
        for i, (cell, width) in enumerate(zip(cells, widths[: len(cells)], strict=True))
    ]
    return " ".join(aligned).rstrip()


def passes_text(count: PassCount) -> str:
    parts = [f"{count.forward}f"] if count.forward else []
    return "+".join(parts + ([f"{count.backward}fb"] if count.backward else [])) or "0"


def method_rows(setup: Setup, args: argparse.Namespace, key: str) -> dict[str, float]:
    """Print the method's rows; return its peers' times."""
    context, methods, skipped = setup.context((key,))
    if not methods:
        print(row(key, "n/a", "", "", "", "", skipped.get(key, "")))
        return {}
    method = methods[0]
    n = args.images if isinstance(method, GradientMethod) else args.perturbation_images
    passes = floor_passes(method, context, (args.image_size, args.image_size))
    bare, counts = floor_runs(setup, passes, n)
    peer_runs = dict(peers(method, context, setup, n))
    runs = {"Auditor": auditor_run(methods, context, setup, n), **bare, **peer_runs}
    times = median_times(runs, args.repeats, args.warmup, setup.inputs.device, peer_runs)
    auditor = times["Auditor"]
    floor = sum(count * times[name] for name, count in counts.items())
    ratio = f"{auditor / floor:.2f}" if floor else ""
    first = (key, passes_text(passes), n, f"{auditor:.3g}", f"{floor:.3g}", ratio)
    for i, name in enumerate(peer_runs or [""]):
        value = times.get(name, "")  # a time, an error, or "" for no peer
        peer = (name, value) if isinstance(value, str) else (name, f"{value:.3g}")
        peer += () if isinstance(value, str) else (f"{value / auditor:.2f}",)
        print(row(*(first if i == 0 else [""] * 6), *peer), flush=True)
    return {name: times[name] for name in peer_runs if not isinstance(times[name], str)}


def gradient_family(setup: Setup, args: argparse.Namespace, peer_times: dict[str, float]) -> None:
    context, methods, _ = setup.context(FAMILY)
    n = args.images
    x, targets = setup.inputs[:n], setup.targets[:n]

    def plain() -> object:
        leaf = x.detach().requires_grad_(True)
        output, taps = setup.model.tapped(leaf, [setup.layer] if setup.layer else [])
        return torch.autograd.grad(target_scores(output, setup.kind, targets).sum(), [leaf, *taps])

    runs = {"family": auditor_run(methods, context, setup, n), "plain": plain}
    times = median_times(runs | {"bare": setup.bare(True, n)}, args.repeats, args.warmup, x.device)
    print(f"gradient family on {n} images: {', '.join(m.key for m in methods)}")
    passes = f"1 forward + {1 + context.guided} backward + {len(methods)} maps"
    print(f"  Auditor, {passes}: {times['family']:.3g} s")
    print(f"  forward+backward of the tapped model (input + layer grads): {times['plain']:.3g} s")
    print(f"  forward+backward of the bare module (input grads): {times['bare']:.3g} s")
    if set(peer_times) == {method.key for method in methods}:
        total = sum(peer_times.values())
        print(
            f"  peers one by one, fastest of each: {total:.3g} s = "
            f"{total / times['family']:.2f} x Auditor"
        )
    print(f"gradient family: {times['family'] / times['plain']:.2f} x forward+backward")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--arch", default="resnet18", help="torchvision model, random weights (resnet18)")
    add("--classes", type=int, default=1000, help="outputs of the model (1000)")
    add("--layer", help="target layer (default: Auditor's choice)")
    add("--image-size", type=int, help="side in pixels (224)")
    add("--images", type=int, help="images for the gradient methods (16)")
    add("--perturbation-images", type=int, help="images for the other methods (4)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto: cuda if present)")
    add("--repeats", type=int, help="timed runs per measurement; the median is shown (3)")
    add("--warmup", type=int, default=1, help="untimed runs before them (1)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    add("--threads", type=int, default=cores, help=f"torch threads ({cores})")
    add("--methods", help="comma-separated registry keys (default: all)")
    for name in (*SETTINGS, "occlusion_window"):
        add("--" + name.replace("_", "-"), type=int, help="as the config key (Auditor's default)")
    add("--quick", action="store_true", help="smoke test: " + str(QUICK).replace("'", ""))
    args = parser.parse_args(argv)
    unknown = set(args.methods.split(",") if args.methods else ()) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    defaults = ExplainSettings(methods=())
    for name in (*FULL, *SETTINGS, "occlusion_window"):
        if getattr(args, name) is None:
            full = FULL[name] if name in FULL else getattr(defaults, name)
            setattr(args, name, QUICK.get(name, full) if args.quick else full)
    return args


def main(argv: list[str] | None = None, model: nn.Module | None = None) -> None:
    """Run the benchmark; ``model`` (an eager module) replaces ``--arch``, for tests."""
    args = parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Captum: inputs without grad
            setup = build(args, model, Path(folder))
            s = setup.settings
            print(machine(setup.inputs.device))
            name = type(model).__name__ if model else args.arch
            print(
                f"model {name}, {args.image_size} px, target layer {setup.layer}; measured "
                f"batches: forward {setup.forward_batch}, forward+backward "
                f"{setup.backward_batch}; median of {args.repeats} after {args.warmup} warm-up"
            )
            print(
                f"settings: IG {s.ig_steps} steps, SmoothGrad {s.smoothgrad_samples}, LIME "
                f"{s.lime_samples}, KernelSHAP {s.shap_samples} samples, ~{s.superpixels} "
                f"superpixels, occlusion window {s.occlusion_window or '1/8'}"
            )
            print("passes: per image, f = forward, fb = forward+backward; times in seconds")
            print(row(*HEADER))
            family: dict[str, float] = {}
            for key in args.methods.split(",") if args.methods else METHODS:
                peer_times = method_rows(setup, args, key)
                if key in FAMILY and peer_times:
                    family[key] = min(peer_times.values())
            gradient_family(setup, args, family)
            print(peak_memory(setup.inputs.device))
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
