"""The peers in ``bench_explain.py``: each library's method on the eager twin, as Auditor runs it.

Each function returns ``(name, run)`` pairs; ``run()`` does the whole explanation of the
first ``n`` images with the settings Auditor uses (see ``bench_explain.py``'s docstring).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from auditor.explain import Batch, ExplainContext, Method
from auditor.explain.integrated_gradients import ig_baseline
from auditor.explain.superpixels import slic_segments

if TYPE_CHECKING:
    from bench_explain import Setup

Run = Callable[[], object]


def cam_peer(name: str, setup: Setup, n: int) -> tuple[str, Run]:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class, layers = getattr(pytorch_grad_cam, name), [setup.eager.get_submodule(setup.layer)]

    def run() -> object:
        targets = [ClassifierOutputTarget(int(t)) for t in setup.targets[:n]]
        with cam_class(setup.eager, layers) as cam, contextlib.redirect_stderr(io.StringIO()):
            return cam(input_tensor=setup.inputs[:n], targets=targets)  # ScoreCAM prints bars

    return f"pytorch-grad-cam {name}", run


def superpixel_peer(make: Callable[[], Any], setup: Setup, n: int, samples: int) -> Run:
    """Captum Lime/KernelShap, one image at a time on its SLIC superpixels."""

    def run() -> object:
        maps = []
        for i in range(n):
            image, target = setup.inputs[i : i + 1], setup.targets[i : i + 1]
            segments = slic_segments(setup.display[i], setup.settings.superpixels)
            mask = segments.to(image.device).view(1, 1, *image.shape[-2:]).expand_as(image)
            options = {"feature_mask": mask, "n_samples": samples}
            maps.append(make().attribute(image, baselines=0.0, target=target, **options))
        return maps

    return run


def lime_package_peer(setup: Setup, n: int) -> Run:
    from lime import lime_image

    @torch.no_grad()
    def classify(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(setup.inputs.device)
        return setup.eager(setup.preprocessing.normalise(batch)).cpu().numpy()

    def segment(image: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(image).permute(2, 0, 1).float()
        return slic_segments(pixels, setup.settings.superpixels).numpy()

    def explain(i: int) -> object:
        options = {"top_labels": None, "num_samples": setup.settings.lime_samples}
        options |= {"hide_color": setup.preprocessing.mean, "segmentation_fn": segment}
        image = setup.display[i].permute(1, 2, 0).double().numpy()
        explainer = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=i)
        labels = (int(setup.targets[i]),)
        return explainer.explain_instance(image, classify, labels, random_seed=i, **options)

    def run() -> object:
        with contextlib.redirect_stderr(io.StringIO()):  # lime's progress bar
            return [explain(i) for i in range(n)]

    return run


def peers(method: Method, context: ExplainContext, setup: Setup, n: int) -> list[tuple[str, Run]]:
    """The library implementations of ``method`` on the eager twin, as (name, run)."""
    import captum.attr as ca
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    eager, s, key = setup.eager, setup.settings, method.key
    x, display, t = setup.inputs[:n], setup.display[:n], setup.targets[:n]
    size, c = (int(x.shape[-2]), int(x.shape[-1])), int(x.shape[1])
    layer = eager.get_submodule(setup.layer) if setup.layer else None

    def captum(name: str, make: Callable[[], Any], **options: object) -> tuple[str, Run]:
        return f"Captum {name}", lambda: make().attribute(x, target=t, **options)

    def lime() -> Any:
        kernel = get_exp_kernel_similarity_function("cosine", kernel_width=0.25)
        return ca.Lime(eager, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=kernel)

    def grad_cam() -> object:
        cam = ca.LayerGradCam(eager, layer).attribute(x, target=t, relu_attributions=True)
        return ca.LayerAttribution.interpolate(cam, size, "bilinear")

    if key == "integrated-gradients":
        base = ig_baseline(Batch(x, display, t, list(range(n))), context, s.ig_baseline)
        make = lambda: ca.IntegratedGradients(eager)  # noqa: E731
        return [captum("IntegratedGradients", make, baselines=base, n_steps=s.ig_steps)]
    if key == "smoothgrad" and s.smoothgrad_base == "saliency":
        sigma = s.smoothgrad_noise * float(x.max() - x.min())
        options = {"nt_type": "smoothgrad", "nt_samples": s.smoothgrad_samples, "stdevs": sigma}
        make = lambda: ca.NoiseTunnel(ca.Saliency(eager))  # noqa: E731
        return [captum("NoiseTunnel(Saliency)", make, abs=False, **options)]
    if key == "occlusion":
        side, stride = method.window(*size)  # type: ignore[attr-defined]
        window = {"sliding_window_shapes": (c, side, side), "strides": (c, stride, stride)}
        return [captum("Occlusion", lambda: ca.Occlusion(eager), baselines=0.0, **window)]
    if key == "lime":
        runs = [("Captum Lime", superpixel_peer(lime, setup, n, s.lime_samples))]
        if c == 3 and importlib.util.find_spec("lime"):
            runs.append(("lime LimeImageExplainer", lime_package_peer(setup, n)))
        return runs
    if key == "kernel-shap":
        shap = superpixel_peer(lambda: ca.KernelShap(eager), setup, n, s.shap_samples)
        return [("Captum KernelShap", shap)]
    if key == "grad-cam":
        return [("Captum LayerGradCam", grad_cam), cam_peer("GradCAM", setup, n)]
    if key in ("grad-cam-plus-plus", "score-cam"):
        return [cam_peer({"score-cam": "ScoreCAM"}.get(key, "GradCAMPlusPlus"), setup, n)]
    if key == "guided-grad-cam":
        make = lambda: ca.GuidedGradCam(eager, layer)  # noqa: E731
        return [captum("GuidedGradCam", make, interpolate_mode="bilinear")]
    simple = {
        "saliency": ("Saliency", {"abs": True}),
        "input-x-gradient": ("InputXGradient", {}),
        "guided-backprop": ("GuidedBackprop", {}),
    }
    if key not in simple:
        return []
    name, options = simple[key]
    return [captum(name, lambda: getattr(ca, name)(eager), **options)]
