"""Explanation methods: Auditor's cost against its pass floor, and the peers against Auditor.

One process, one model (a torchvision architecture with random weights, scripted to
TorchScript for Auditor; its eager twin for the peers, whose hooks TorchScript rejects),
the same synthetic images, and for each measured run warm-up runs and then the median of
``--repeats`` runs, Auditor, floor and peers interleaved. Per method it prints:

* **Auditor / floor**: Auditor's wall time (gradient passes + ``attribute``, as the
  explain stage runs them, in a context built for that method alone) over the time of
  the passes the method needs: ``passes_per_image`` plus, for methods reading the shared
  passes, one forward+backward pass (CAM and Score-CAM: one forward, since they read
  activations only). Each pass kind is timed bare on the TorchScript module
  (``module(x)`` under ``no_grad``; ``module(x)`` + ``autograd.grad`` of the summed target
  score w.r.t. the input) at the batch size Auditor measured for it; the passes of all
  images fill whole batches and the remainder is one smaller batch. The guided methods
  count one forward+backward, so their ratio includes Auditor's plain backward pass.
* **peer / Auditor**: the library implementation on the same images and settings.
  Captum: ``Saliency`` (abs), ``InputXGradient``, ``GuidedBackprop``, ``LayerGradCam``
  (ReLU, bilinear upsampling), ``GuidedGradCam`` (bilinear), ``IntegratedGradients`` (same
  steps and baseline, default ``internal_batch_size``: all steps of all images in one
  pass), ``NoiseTunnel(Saliency)`` (same samples, sigma = noise x the batch's value range,
  default ``nt_samples_batch_size``: all at once), ``Occlusion`` (same window, stride and
  zero fill), ``Lime`` (ridge alpha 1, cosine kernel 0.25) and ``KernelShap`` on the same
  SLIC superpixels, all three with the default ``perturbations_per_eval=1``.
  pytorch-grad-cam: ``GradCAM``, ``GradCAMPlusPlus``, ``ScoreCAM`` (its default batch 16).
  The ``lime`` package's ``LimeImageExplainer`` (same samples, kernel, SLIC superpixels,
  mean-colour fill; its default batch 10) if installed. SLIC runs inside every timed run.

Gradient methods run on ``--images`` images in one batch, the others on the first
``--perturbation-images``. The last lines time the gradient family (saliency,
input x gradient, guided backprop, Grad-CAM, Grad-CAM++, guided Grad-CAM) from one
forward and two backward passes, over one forward+backward pass of the tapped TorchScript
model with gradients w.r.t. the input and the target layer; the peer figure is the
fastest peer of each of the six run one by one. No thresholds: it reports.

    python benchmarks/bench_explain.py [--arch resnet18] [--image-size 224] [--images 16]
        [--perturbation-images 4] [--device auto] [--repeats 3] [--methods a,b] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from auditor.architecture import LayerInfo, choose_target_layer
from auditor.explain import METHODS, Batch, ExplainContext, ExplainSettings, GradientMethod, Method
from auditor.explain import PassCount
from auditor.explain.engine import build_context, measure_batches
from auditor.explain.integrated_gradients import ig_baseline
from auditor.explain.superpixels import slic_segments
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind, load_model, resolve_device, target_scores
from auditor.synthetic import generate

FAMILY = (
    "saliency", "input-x-gradient", "guided-backprop", "grad-cam", "grad-cam-plus-plus",
    "guided-grad-cam",
)  # fmt: skip
ACTIVATIONS_ONLY = ("cam", "score-cam")  # read the shared passes' activations, no gradient
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FULL = {"images": 16, "perturbation_images": 4, "image_size": 224, "repeats": 3}
QUICK = {"images": 4, "perturbation_images": 2, "image_size": 64, "repeats": 1, "ig_steps": 4,
         "smoothgrad_samples": 4, "superpixels": 16, "lime_samples": 16, "shap_samples": 16}  # fmt: skip
Run = Callable[[], object]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line]
        name = names[0] if names else platform.processor() or platform.machine()
    return f"machine: {name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
    f"torch {torch.__version__}, device {device}"


def median_times(runs: dict[str, Run], repeats: int, warmup: int, device: torch.device) -> dict:
    """Median wall time of each run, after ``warmup`` runs each; runs interleave per repeat."""

    def timed(run: Run) -> float:
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for run in runs.values():
        for _ in range(warmup):
            timed(run)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: statistics.median(values) for name, values in times.items()}


@dataclass
class Setup:
    model: LoadedModel
    eager: nn.Module
    layer: str | None
    kind: OutputKind
    settings: ExplainSettings
    preprocessing: Preprocessing
    display: torch.Tensor  # (N, C, H, W) in [0, 1], CPU
    inputs: torch.Tensor  # normalised, on the device
    targets: torch.Tensor  # predicted classes, on the device
    forward_batch: int = 32
    backward_batch: int = 32
    layer_channels: int = 0

    def context(self, keys: tuple[str, ...]) -> tuple[ExplainContext, list[Method], dict]:
        settings = replace(self.settings, methods=keys)
        context, methods, skipped = build_context(
            self.model, self.kind, self.layer, settings, self.preprocessing
        )
        context.forward_batch, context.backward_batch = self.forward_batch, self.backward_batch
        context.layer_channels = self.layer_channels
        context.mean_colour = self.display.mean(dim=(0, 2, 3))
        return context, methods, skipped

    def bare(self, backward: bool, size: int) -> Run:
        """One bare pass of ``size`` images on the TorchScript module."""
        index = torch.arange(size, device=self.inputs.device) % len(self.inputs)
        x, targets = self.inputs[index], self.targets[index]
        if not backward:
            return lambda: torch.no_grad()(self.model.module)(x)

        def run() -> object:
            leaf = x.detach().requires_grad_(True)
            score = target_scores(self.model.module(leaf), self.kind, targets).sum()
            return torch.autograd.grad(score, leaf)

        return run


def floor_runs(setup: Setup, passes: PassCount, n: int) -> tuple[dict[str, Run], dict[str, int]]:
    """Bare passes to time, and how many of each the floor of ``n`` images adds up to."""
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


def floor_passes(method: Method, context: ExplainContext, size: tuple[int, int]) -> PassCount:
    extra = method.passes_per_image(context, size)
    if not method.needs_passes:
        return extra
    if method.key in ACTIVATIONS_ONLY:
        return PassCount(extra.forward + 1, extra.backward)
    return PassCount(extra.forward, extra.backward + 1)


def auditor_run(method: Method, context: ExplainContext, setup: Setup, n: int) -> Run:
    x, display, targets = setup.inputs[:n], setup.display[:n], setup.targets[:n]

    def run() -> object:
        batch = Batch(x, display, targets, seeds=list(range(n)))
        if method.needs_passes:
            batch.passes = context.passes(x, targets)
        return method.attribute(batch, context)

    return run


def grad_cam_peer(name: str, setup: Setup, x: torch.Tensor, targets: torch.Tensor) -> Run:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = setup.eager.get_submodule(setup.layer or "")

    def run() -> object:
        wanted = [ClassifierOutputTarget(int(t)) for t in targets]
        cam_class = getattr(pytorch_grad_cam, name)
        with cam_class(setup.eager, [layer]) as cam, contextlib.redirect_stderr(io.StringIO()):
            return cam(input_tensor=x, targets=wanted)  # ScoreCAM's tqdm bars: stderr

    return run


def superpixel_peer(explainer: object, setup: Setup, n: int, **options: object) -> Run:
    """A Captum Lime/KernelShap run per image on the SLIC superpixels (computed in the run)."""

    def run() -> object:
        maps = []
        for i in range(n):
            image = setup.inputs[i : i + 1]
            segments = slic_segments(setup.display[i], setup.settings.superpixels)
            mask = segments.to(image.device).view(1, 1, *image.shape[-2:]).expand_as(image)
            maps.append(
                explainer.attribute(  # type: ignore[attr-defined]
                    image, baselines=0.0, target=setup.targets[i : i + 1], feature_mask=mask,
                    n_samples=options["samples"], perturbations_per_eval=1,
                )  # fmt: skip
            )
        return maps

    return run


def lime_package_peer(setup: Setup, n: int) -> Run:
    from lime import lime_image

    device, eager, settings = setup.inputs.device, setup.eager, setup.settings

    @torch.no_grad()
    def classify(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(device)
        return eager(setup.preprocessing.normalise(batch)).cpu().numpy()

    def segment(image: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(image).permute(2, 0, 1).float()
        return slic_segments(pixels, settings.superpixels).numpy()

    def run() -> object:
        with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
            return [
                lime_image.LimeImageExplainer(kernel_width=0.25, random_state=i).explain_instance(
                    setup.display[i].permute(1, 2, 0).double().numpy(), classify,
                    labels=(int(setup.targets[i]),), top_labels=None,
                    hide_color=setup.preprocessing.mean, num_samples=settings.lime_samples,
                    segmentation_fn=segment, random_seed=i,
                )  # fmt: skip
                for i in range(n)
            ]

    return run


def peers(method: Method, context: ExplainContext, setup: Setup, n: int) -> list[tuple[str, Run]]:
    """The library implementations of ``method`` on the eager twin, as (name, run)."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import (
        GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, KernelShap,
        LayerAttribution, LayerGradCam, Lime, NoiseTunnel, Occlusion, Saliency,
    )  # fmt: skip
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    eager, s = setup.eager, setup.settings
    x, display, t = setup.inputs[:n], setup.display[:n], setup.targets[:n]
    size = (int(x.shape[-2]), int(x.shape[-1]))
    layer = eager.get_submodule(setup.layer) if setup.layer else None
    key = method.key
    if key == "saliency":
        return [("Captum Saliency", lambda: Saliency(eager).attribute(x, target=t, abs=True))]
    if key == "input-x-gradient":
        return [("Captum InputXGradient", lambda: InputXGradient(eager).attribute(x, target=t))]
    if key == "guided-backprop":
        return [("Captum GuidedBackprop", lambda: GuidedBackprop(eager).attribute(x, target=t))]
    if key == "integrated-gradients":
        base = ig_baseline(Batch(x, display, t, list(range(n))), context, s.ig_baseline)
        return [("Captum IntegratedGradients", lambda: IntegratedGradients(eager).attribute(
            x, baselines=base, target=t, n_steps=s.ig_steps))]  # fmt: skip
    if key == "smoothgrad" and s.smoothgrad_base == "saliency":
        sigma = s.smoothgrad_noise * float(x.max() - x.min())
        return [("Captum NoiseTunnel(Saliency)", lambda: NoiseTunnel(Saliency(eager)).attribute(
            x, nt_type="smoothgrad", nt_samples=s.smoothgrad_samples, stdevs=sigma, target=t,
            abs=False))]  # fmt: skip
    if key == "occlusion":
        side, stride = method.window(*size)  # type: ignore[attr-defined]
        c = int(x.shape[1])
        return [("Captum Occlusion", lambda: Occlusion(eager).attribute(
            x, sliding_window_shapes=(c, side, side), strides=(c, stride, stride),
            baselines=0.0, target=t))]  # fmt: skip
    if key == "grad-cam":
        return [
            ("Captum LayerGradCam", lambda: LayerAttribution.interpolate(
                LayerGradCam(eager, layer).attribute(x, target=t, relu_attributions=True),
                size, "bilinear")),
            ("pytorch-grad-cam GradCAM", grad_cam_peer("GradCAM", setup, x, t)),
        ]  # fmt: skip
    if key == "grad-cam-plus-plus":
        return [("pytorch-grad-cam GradCAMPlusPlus", grad_cam_peer("GradCAMPlusPlus", setup, x, t))]
    if key == "guided-grad-cam":
        return [("Captum GuidedGradCam", lambda: GuidedGradCam(eager, layer).attribute(
            x, target=t, interpolate_mode="bilinear"))]  # fmt: skip
    if key == "score-cam":
        return [("pytorch-grad-cam ScoreCAM", grad_cam_peer("ScoreCAM", setup, x, t))]
    if key == "kernel-shap":
        return [("Captum KernelShap", superpixel_peer(KernelShap(eager), setup, n,
                                                      samples=s.shap_samples))]  # fmt: skip
    if key == "lime":
        lime = Lime(
            eager, interpretable_model=SkLearnRidge(alpha=1.0),
            similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=0.25),
        )  # fmt: skip
        runs = [("Captum Lime", superpixel_peer(lime, setup, n, samples=s.lime_samples))]
        with contextlib.suppress(ImportError):
            if x.shape[1] == 3:
                runs.append(("lime LimeImageExplainer", lime_package_peer(setup, n)))
        return runs
    return []


def build(args: argparse.Namespace, eager: nn.Module | None, folder: Path) -> Setup:
    device = resolve_device(args.device)
    eager = (eager or getattr(torchvision.models, args.arch)(num_classes=args.classes)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(eager).save(str(folder / "model.pt"))
    model = load_model(folder / "model.pt", device)
    eager = eager.to(device)
    mean, std = IMAGENET if model.in_channels == 3 else ((0.5,), (0.25,))
    preprocessing = Preprocessing(model.in_channels, args.image_size, mean, std)
    n = max(args.images, args.perturbation_images)
    display = torch.stack(
        [preprocessing.display(Image.fromarray(s.image)) for s in generate("val", n, seed=0)]
    )
    inputs = preprocessing.normalise(display).to(device)
    with torch.no_grad():
        targets = eager(inputs).argmax(dim=1)
        sites = model.tapped.sites
        _, outputs = model.tapped(inputs[:1], [site.path for site in sites])
    shapes = [tuple(o.shape[1:]) if isinstance(o, torch.Tensor) else () for o in outputs]
    infos = [LayerInfo(s.path, s.type_name, shape, 0, 0, s.order) for s, shape in zip(sites, shapes)]  # noqa: B905
    chosen = choose_target_layer(tuple(infos))
    settings = ExplainSettings(
        methods=tuple(METHODS), ig_steps=args.ig_steps, smoothgrad_samples=args.smoothgrad_samples,
        superpixels=args.superpixels, lime_samples=args.lime_samples,
        shap_samples=args.shap_samples,
    )  # fmt: skip
    setup = Setup(model, eager, args.layer or (chosen.path if chosen else None),
                  OutputKind.LOGITS, settings, preprocessing, display, inputs, targets)  # fmt: skip
    context, methods, _ = setup.context(tuple(METHODS))
    measure_batches(context, methods, inputs[0])
    setup.forward_batch, setup.backward_batch = context.forward_batch, context.backward_batch
    if setup.layer:
        passes = context.passes(inputs[:1], targets[:1])
        setup.layer_channels = int(passes.activations.shape[1])
    return setup


def table_row(*cells: object) -> str:
    widths = (20, 7, 5, 10, 10, 10, 33, 10, 9)
    return " ".join(
        f"{c:<{w}}" if i in (0, 1, 6) else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))  # noqa: B905
    ).rstrip()


def passes_text(count: PassCount) -> str:
    parts = [f"{count.forward}f"] * bool(count.forward) + [f"{count.backward}fb"] * bool(count.backward)
    return "+".join(parts) or "0"


def secs(value: float) -> str:
    return f"{value:.3g}"


def gradient_family(setup: Setup, args: argparse.Namespace, peer_times: dict[str, float]) -> None:
    context, methods, _ = setup.context(FAMILY)
    n = args.images
    x, display, targets = setup.inputs[:n], setup.display[:n], setup.targets[:n]

    def family() -> object:
        batch = Batch(x, display, targets, seeds=list(range(n)))
        batch.passes = context.passes(x, targets)
        return [method.attribute(batch, context) for method in methods]

    def plain() -> object:
        leaf = x.detach().requires_grad_(True)
        output, taps = setup.model.tapped(leaf, [setup.layer] if setup.layer else [])
        return torch.autograd.grad(target_scores(output, setup.kind, targets).sum(), [leaf, *taps])

    runs = {"family": family, "plain": plain, "bare": setup.bare(True, n)}
    times = median_times(runs, args.repeats, args.warmup, setup.inputs.device)
    keys = ", ".join(method.key for method in methods)
    print(f"gradient family ({keys}) on {n} images: Auditor {secs(times['family'])} s; "
          f"one forward+backward of the tapped model (input + layer gradients) "
          f"{secs(times['plain'])} s; bare module forward+backward {secs(times['bare'])} s")  # fmt: skip
    if peer_times:
        total = sum(peer_times.values())
        print(f"gradient family peers one by one (fastest of each, {len(peer_times)} methods): "
              f"{secs(total)} s = {total / times['family']:.2f} x Auditor")  # fmt: skip
    print(f"gradient family: {times['family'] / times['plain']:.2f} x forward+backward")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="resnet18", help="torchvision model (random weights)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--layer", help="target layer (default: Auditor's choice)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--images", type=int, help="images for the gradient methods (16)")
    parser.add_argument("--perturbation-images", type=int, help="images for the others (4)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--methods", help="comma-separated registry keys (default: all)")
    defaults = ExplainSettings(methods=())
    for name in ("ig_steps", "smoothgrad_samples", "superpixels", "lime_samples", "shap_samples"):
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    for name in ("ig_steps", "smoothgrad_samples", "superpixels", "lime_samples", "shap_samples"):
        FULL.setdefault(name, getattr(defaults, name))
    for name, value in FULL.items():
        if getattr(args, name) is None:
            setattr(args, name, QUICK.get(name, value) if args.quick else value)
    return args


def main(argv: list[str] | None = None, model: nn.Module | None = None) -> None:
    """Run the benchmark; ``model`` replaces ``--arch`` with an eager module (for tests)."""
    args = parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        with tempfile.TemporaryDirectory() as folder:
            run_benchmark(args, model, Path(folder))
    finally:
        torch.set_num_threads(threads)


def run_benchmark(args: argparse.Namespace, eager: nn.Module | None, folder: Path) -> None:
    setup = build(args, eager, folder)
    device, s = setup.inputs.device, setup.settings
    print(machine(device))
    print(f"model {type(setup.eager).__name__ if eager else args.arch}, {args.image_size} px, "
          f"layer {setup.layer}, measured batches: forward {setup.forward_batch}, "
          f"forward+backward {setup.backward_batch}; median of {args.repeats} after "
          f"{args.warmup} warm-up")  # fmt: skip
    print(f"settings: IG {s.ig_steps} steps, SmoothGrad {s.smoothgrad_samples} samples, "
          f"~{s.superpixels} superpixels, LIME {s.lime_samples} samples, KernelSHAP "
          f"{s.shap_samples} coalitions; gradient methods on {args.images} images, "
          f"the others on {args.perturbation_images}")  # fmt: skip
    print(table_row("method", "passes", "imgs", "Auditor s", "floor s", "Aud/floor", "peer",
                    "peer s", "peer/Aud"))  # fmt: skip
    keys = tuple(args.methods.split(",")) if args.methods else tuple(METHODS)
    family_peers: dict[str, float] = {}
    size = (args.image_size, args.image_size)
    for key in keys:
        context, methods, skipped = setup.context((key,))
        if not methods:
            print(table_row(key, "", "", "n/a", "", "", skipped.get(key, "")))
            continue
        method = methods[0]
        n = args.images if isinstance(method, GradientMethod) else args.perturbation_images
        passes = floor_passes(method, context, size)
        bare, counts = floor_runs(setup, passes, n)
        peer_runs = dict(peers(method, context, setup, n))
        runs = {"auditor": auditor_run(method, context, setup, n), **bare, **peer_runs}
        times = median_times(runs, args.repeats, args.warmup, device)
        auditor = times["auditor"]
        floor = sum(count * times[name] for name, count in counts.items())
        ratio = f"{auditor / floor:.2f}" if floor else ""
        first = (key, passes_text(passes), n, secs(auditor), secs(floor), ratio)
        for i, name in enumerate(peer_runs or [""]):
            peer = (name, secs(times[name]), f"{times[name] / auditor:.2f}") if name else ()
            print(table_row(*(first if i == 0 else ("",) * 6), *peer), flush=True)
        if key in FAMILY and peer_runs:
            family_peers[key] = min(times[name] for name in peer_runs)
    gradient_family(setup, args, family_peers if set(family_peers) == set(FAMILY) else {})


if __name__ == "__main__":
    main()
