"""Every explanation method on TorchScript models against a reference on the eager twin.

Auditor runs on the scripted and on the traced model (saved and loaded, as a user's
file would be); the reference runs on the eager ``nn.Module`` with the same weights:
Captum for the gradient and perturbation methods, pytorch-grad-cam for Score-CAM, and
the papers' formulas from forward/backward hooks for CAM and Grad-CAM++. The reference's
raw output goes through the method's own post-processing steps (``Method.postprocess``),
so both sides are compared as Auditor saves them (before min-max), and raw as well.

Six torchvision architectures (random weights, batch-norm statistics and logit scale
calibrated: :func:`tests.helpers.calibrated`), each scripted and traced, two 64-pixel
images; Score-CAM, LIME and KernelSHAP, which cost hundreds of passes per image, on two
of the cheaper models and one image.

Tolerance: max |Auditor - reference| ≤ 1e-4 × max |reference| (float32). The two sides
run the same arithmetic in a different order (TorchScript graph vs eager modules), and
random-weight models give maps of very different magnitudes, hence relative to the
reference's largest value.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import LayerGradCam, NoiseTunnel
from captum.attr import Lime as CaptumLime
from captum.attr import Occlusion as CaptumOcclusion
from captum.attr import Saliency as CaptumSaliency
from captum.attr._core.lime import get_exp_kernel_similarity_function
from pytorch_grad_cam import GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage.segmentation import slic
from torch import nn

from auditor.explain import (
    METHODS,
    Batch,
    ExplainContext,
    ExplainSettings,
    GradientPasses,
    Method,
)
from auditor.explain.engine import build_context
from auditor.explain.guided_backprop import GuidedBackprop
from auditor.explain.integrated_gradients import IntegratedGradients
from auditor.explain.postprocess import minmax, relu, upsample_bilinear
from auditor.explain.smoothgrad import SmoothGrad
from auditor.images import Preprocessing
from auditor.load import OutputKind
from tests.helpers import (
    assert_matches,
    calibrated,
    ig_baseline_images,
    loaded_model,
    smooth_images,
    torchscript_twin,
)

SIZE = 64
ARCHITECTURES = {  # target layer per architecture, as in tests/test_taps.py
    "resnet18": "layer4",
    "densenet": "features",
    "mobilenet_v3_small": "features",
    "efficientnet_b0": "features",
    "regnet_y_400mf": "trunk_output",
    "squeezenet1_1": "features",
}
MODES = ("script", "trace", "export")
CASES = [(name, mode) for name in ARCHITECTURES for mode in MODES]
# The GAP + linear head of each architecture that has one: (pooled module, linear module,
# whether a functional ReLU sits between them). The others have no such head.
HEADS = {
    "resnet18": ("layer4", "fc", False),
    "densenet": ("features", "classifier", True),
    "efficientnet_b0": ("features", "classifier.1", False),
    "regnet_y_400mf": ("trunk_output", "fc", False),
}
# Score-CAM costs one forward pass per channel and image (128 to 1280 channels here),
# LIME and KernelSHAP one per sample: they are compared on the cheapest models, on one
# image.
SCORE_CAM = ("mobilenet_v3_small", "densenet")
SUPERPIXEL = ("mobilenet_v3_small", "squeezenet1_1")
FIRST_IMAGE_ONLY = {"score-cam", "lime", "kernel-shap"}
IMAGES = 2
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PREPROCESSING = Preprocessing(3, None, MEAN, STD)
SETTINGS = ExplainSettings(
    methods=tuple(METHODS),
    ig_steps=4,
    smoothgrad_samples=4,
    occlusion_window=32,
    occlusion_stride=16,
    superpixels=8,
    lime_samples=32,
    shap_samples=32,
)


def build(name: str) -> nn.Module:
    """A torchvision model with random weights (seeded), three classes, calibrated (see
    :func:`tests.helpers.calibrated`: otherwise mobilenet's and efficientnet's logits barely
    depend on the image), in eval mode.

    ``densenet`` is torchvision's DenseNet-121 (same code, widths and growth rate) with two
    layers per dense block instead of 6, 12, 24 and 16: the same graph patterns (the
    concatenations, the functional in-place ReLU after ``features``) at a sixth of the
    time to script it.
    """
    torch.manual_seed(0)
    if name == "densenet":
        model: nn.Module = torchvision.models.DenseNet(32, (2, 2, 2, 2), 64, num_classes=3)
    else:
        model = getattr(torchvision.models, name)(num_classes=3)
    return calibrated(model, PREPROCESSING.normalise(smooth_images(8, SIZE, seed=2)))


class DenseNetWithReluModule(nn.Module):
    """DenseNet's forward with its functional ``F.relu`` after ``features`` as an ``nn.ReLU``.

    Captum's guided backpropagation guides ``nn.ReLU`` modules only; Auditor guides every
    ReLU of the graph, this one included. The same weights, the same output.
    """

    def __init__(self, densenet: torchvision.models.DenseNet) -> None:
        super().__init__()
        self.features = densenet.features
        self.relu = nn.ReLU()
        self.classifier = densenet.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.relu(self.features(x)), (1, 1))
        return self.classifier(torch.flatten(pooled, 1))


def layer_values(
    model: nn.Module, layer: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output of ``layer``, the target scores' gradient w.r.t. it, and the logits (eager hooks).

    The hook hands the model a clone, so that an in-place op after the layer (DenseNet's
    ``F.relu(features, inplace=True)``) cannot overwrite the value recorded.
    """
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        seen.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(inputs.detach().clone().requires_grad_(True))
            score = logits.gather(1, targets.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, seen)
    finally:
        handle.remove()
    return seen[0].detach(), grads, logits.detach()


def superpixels(display: torch.Tensor, n_segments: int) -> torch.Tensor:
    """scikit-image SLIC with its RGB defaults, labels made dense ``0..M-1``."""
    labels = slic(
        display.permute(1, 2, 0).numpy().astype(np.float64),
        n_segments=n_segments,
        compactness=10,
        sigma=1,
        start_label=0,
    )
    _, dense = np.unique(labels, return_inverse=True)
    return torch.from_numpy(dense.reshape(labels.shape).astype(np.int64))


def grad_cam_plus_plus(activations: torch.Tensor, grads: torch.Tensor, eps: float) -> torch.Tensor:
    """``(B, h, w)`` Grad-CAM++ before ReLU, by the paper's formula (float64).

    ``α = g² / (2g² + Σ_ab A · g³ + eps)``, 0 where that denominator is 0;
    ``w_k = Σ_ij α · relu(g)``; map ``Σ_k w_k A_k``.
    """
    a, g = activations.double(), grads.double()
    denominator = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3 + eps
    alpha = torch.where(denominator != 0, g**2 / denominator, torch.zeros_like(g))
    weights = (alpha * g.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    return (weights * a).sum(dim=1)


class Twin:
    """An eager torchvision model, its inputs and every method's reference on it (lazily)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model = build(name).eval()
        self.layer = self.model.get_submodule(ARCHITECTURES[name])
        self.display = smooth_images(IMAGES, SIZE, seed=1)
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        self.inputs = (self.display - mean) / std
        self.black = ((0 - mean) / std).expand_as(self.inputs)  # a black image, normalised
        self.targets = torch.tensor([0, 2])
        self.seeds = [3, 8]
        self.size = (SIZE, SIZE)
        self._references: dict[str, torch.Tensor] = {}

    @cached_property
    def guided_model(self) -> nn.Module:
        """The model whose ``nn.ReLU`` modules are all of its ReLUs (see DenseNetWithReluModule)."""
        if not isinstance(self.model, torchvision.models.DenseNet):
            return self.model
        wrapper = DenseNetWithReluModule(self.model).eval()
        with torch.no_grad():
            assert torch.equal(wrapper(self.inputs), self.model(self.inputs))
        return wrapper

    @cached_property
    def layer_values(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return layer_values(self.model, self.layer, self.inputs, self.targets)

    def reference(self, key: str) -> torch.Tensor:
        """The reference's raw map for method ``key`` (first image only for the costly ones)."""
        if key not in self._references:
            n = 1 if key in FIRST_IMAGE_ONLY else IMAGES
            self._references[key] = REFERENCES[key](self, n).detach()
        return self._references[key]


def _saliency(twin: Twin, n: int) -> torch.Tensor:
    return CaptumSaliency(twin.model).attribute(twin.inputs[:n], target=twin.targets[:n], abs=False)


def _input_x_gradient(twin: Twin, n: int) -> torch.Tensor:
    return CaptumInputXGradient(twin.model).attribute(twin.inputs[:n], target=twin.targets[:n])


def _guided_backprop(twin: Twin, n: int) -> torch.Tensor:
    explainer = CaptumGuidedBackprop(twin.guided_model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
        return explainer.attribute(twin.inputs[:n], target=twin.targets[:n])


def _integrated_gradients(twin: Twin, n: int) -> torch.Tensor:
    return CaptumIntegratedGradients(twin.model).attribute(
        twin.inputs[:n],
        baselines=twin.black[:n],
        target=twin.targets[:n],
        n_steps=SETTINGS.ig_steps,
    )


def smoothgrad_noise(inputs: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """``(B·n, C, H, W)`` noisy copies as documented: noise σ = share × the image's range,
    drawn from a CPU generator seeded with the image's seed; image by image."""
    n = SETTINGS.smoothgrad_samples
    copies = []
    for image, seed in zip(inputs, seeds, strict=True):
        sigma = SETTINGS.smoothgrad_noise * (image.max() - image.min()).item()
        noise = torch.randn((n, *image.shape), generator=torch.Generator().manual_seed(seed))
        copies.append(image + noise * sigma)
    return torch.cat(copies)


def _smoothgrad(twin: Twin, n: int) -> torch.Tensor:
    """Captum's NoiseTunnel(Saliency(abs=False)) fed the same noisy copies as Auditor."""
    noisy = smoothgrad_noise(twin.inputs[:n], twin.seeds[:n])
    original = NoiseTunnel.__dict__["_add_noise_to_input"]
    same_noise = staticmethod(lambda _input, _stdev, _samples: noisy.clone())
    NoiseTunnel._add_noise_to_input = same_noise
    try:
        return NoiseTunnel(CaptumSaliency(twin.model)).attribute(
            twin.inputs[:n],
            nt_type="smoothgrad",
            nt_samples=SETTINGS.smoothgrad_samples,
            stdevs=0.0,
            target=twin.targets[:n],
            abs=False,
        )
    finally:
        NoiseTunnel._add_noise_to_input = original


def _occlusion(twin: Twin, n: int) -> torch.Tensor:
    side, stride = SETTINGS.occlusion_window, SETTINGS.occlusion_stride
    assert side is not None and stride is not None
    return CaptumOcclusion(twin.model).attribute(
        twin.inputs[:n],
        sliding_window_shapes=(3, side, side),
        strides=(3, stride, stride),
        baselines=0.0,
        target=twin.targets[:n],
    )


def _cam(twin: Twin, n: int) -> torch.Tensor:
    pooled, linear, functional_relu = HEADS[twin.name]
    layer = twin.model.get_submodule(pooled)
    features, _, _ = layer_values(twin.model, layer, twin.inputs[:n], twin.targets[:n])
    if functional_relu:
        features = features.clamp(min=0)
    head = twin.model.get_submodule(linear)
    assert isinstance(head, nn.Linear)
    return torch.einsum("bk,bkhw->bhw", head.weight.detach()[twin.targets[:n]], features)


def _grad_cam(twin: Twin, n: int) -> torch.Tensor:
    explainer = LayerGradCam(twin.model, twin.layer)
    return explainer.attribute(
        twin.inputs[:n], target=twin.targets[:n], relu_attributions=False
    ).squeeze(1)


def _grad_cam_plus_plus(twin: Twin, n: int) -> torch.Tensor:
    activations, grads, _ = twin.layer_values
    return grad_cam_plus_plus(activations[:n], grads[:n], eps=0.0).float()


def _guided_grad_cam(twin: Twin, n: int) -> torch.Tensor:
    model = twin.guided_model
    explainer = CaptumGuidedGradCam(model, model.get_submodule(ARCHITECTURES[twin.name]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
        return explainer.attribute(
            twin.inputs[:n], target=twin.targets[:n], interpolate_mode="bilinear"
        )


def _score_cam(twin: Twin, n: int) -> torch.Tensor:
    """pytorch-grad-cam's channel weights (its ``get_cam_weights``) on the eager layer output.

    The layer output comes from :func:`layer_values`, not from pytorch-grad-cam's hook:
    that one keeps the tensor the model goes on with, which DenseNet's in-place
    ``F.relu`` after ``features`` then overwrites (its Score-CAM would mask with the
    rectified map)."""
    activations = twin.layer_values[0][:n]
    cam = ScoreCAM(twin.model, [twin.layer])
    cam.activations_and_grads.release()  # only its scoring of masked inputs is used
    cam.batch_size = 64
    targets = [ClassifierOutputTarget(int(t)) for t in twin.targets[:n]]
    with patch("tqdm.tqdm", lambda iterable, **_: iterable):
        weights = cam.get_cam_weights(
            twin.inputs[:n], twin.layer, targets, activations.numpy(), None
        )
    return torch.einsum("bk,bkhw->bhw", torch.from_numpy(weights), activations)


def _superpixel_reference(twin: Twin, n: int, explainer: Any, samples: int) -> torch.Tensor:
    maps = []
    for i in range(n):
        mask = superpixels(twin.display[i], SETTINGS.superpixels).expand(1, 3, SIZE, SIZE)
        torch.manual_seed(twin.seeds[i])
        maps.append(
            explainer.attribute(
                twin.inputs[i : i + 1],
                baselines=0.0,
                target=twin.targets[i : i + 1],
                feature_mask=mask,
                n_samples=samples,
            )
        )
    return torch.cat(maps)


def _lime(twin: Twin, n: int) -> torch.Tensor:
    explainer = CaptumLime(
        twin.model,
        interpretable_model=SkLearnRidge(alpha=1.0),
        similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=0.25),
    )
    return _superpixel_reference(twin, n, explainer, SETTINGS.lime_samples)


def _kernel_shap(twin: Twin, n: int) -> torch.Tensor:
    return _superpixel_reference(twin, n, CaptumKernelShap(twin.model), SETTINGS.shap_samples)


REFERENCES: dict[str, Callable[[Twin, int], torch.Tensor]] = {
    "saliency": _saliency,
    "input-x-gradient": _input_x_gradient,
    "guided-backprop": _guided_backprop,
    "integrated-gradients": _integrated_gradients,
    "smoothgrad": _smoothgrad,
    "occlusion": _occlusion,
    "cam": _cam,
    "grad-cam": _grad_cam,
    "grad-cam-plus-plus": _grad_cam_plus_plus,
    "guided-grad-cam": _guided_grad_cam,
    "score-cam": _score_cam,
    "lime": _lime,
    "kernel-shap": _kernel_shap,
}


@dataclass
class Case:
    """Auditor's side: the compiled twin, its context, and one batch with its passes."""

    twin: Twin
    mode: str
    context: ExplainContext
    methods: dict[str, Method]
    not_applicable: dict[str, str]
    batch: Batch

    def first(self, n: int) -> Batch:
        """The batch cut to its first ``n`` images, passes included."""
        batch, passes = self.batch, self.batch.passes
        assert passes is not None
        return Batch(
            inputs=batch.inputs[:n],
            display=batch.display[:n],
            targets=batch.targets[:n],
            seeds=batch.seeds[:n],
            passes=GradientPasses(**{f.name: getattr(passes, f.name)[:n] for f in fields(passes)}),
        )

    def raw(self, key: str) -> torch.Tensor:
        return self.methods[key].raw_map(self.batch, self.context)

    def compare(self, key: str) -> float:
        """Auditor's raw map and map of ``key`` against the reference's; the larger gap."""
        method = self.methods[key]
        reference = self.twin.reference(key)
        batch = self.first(len(reference))
        raw = method.raw_map(batch, self.context)
        gap = assert_matches(raw, reference)
        processed = method.postprocess(reference, self.twin.size)
        return max(gap, assert_matches(method.attribute(batch, self.context), processed))


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these 64-pixel passes gain little from a second one, and on a
    2-core machine shared with other work two threads that wait on each other made this
    module 8 times slower (545 s against 67 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def twins() -> dict[str, Twin]:
    return {}


def build_case(twins: dict[str, Twin], name: str, mode: str) -> Case:
    if name not in twins:
        twins.clear()  # tests run grouped by case: the previous architecture is done
        twins[name] = Twin(name)
    twin = twins[name]
    subject = loaded_model(torchscript_twin(twin.model, mode, SIZE))
    context, methods, not_applicable = build_context(
        subject, OutputKind.LOGITS, ARCHITECTURES[name], SETTINGS, PREPROCESSING
    )
    context.forward_batch, context.backward_batch = 64, 16
    context.mean_colour = twin.display.mean(dim=(0, 2, 3))
    batch = Batch(
        inputs=PREPROCESSING.normalise(twin.display),
        display=twin.display,
        targets=twin.targets,
        seeds=twin.seeds,
    )
    torch.testing.assert_close(batch.inputs, twin.inputs, rtol=0, atol=0)
    batch.passes = context.passes(batch.inputs, batch.targets)
    context.layer_channels = int(batch.passes.activations.shape[1])
    return Case(twin, mode, context, {m.key: m for m in methods}, not_applicable, batch)


def ids(cases: list[tuple[str, str]]) -> list[str]:
    return [f"{name}-{mode}" for name, mode in cases]


@pytest.fixture(scope="module", params=CASES, ids=ids(CASES))
def case(request: pytest.FixtureRequest, twins: dict[str, Twin]) -> Case:
    return build_case(twins, *request.param)


def only(*names: str) -> pytest.MarkDecorator:
    """Run a test on these architectures' cases only (both modes)."""
    chosen = [c for c in CASES if c[0] in names]
    return pytest.mark.parametrize("case", chosen, ids=ids(chosen), indirect=True)


def test_saliency_equals_captum_saliency(case: Case) -> None:
    case.compare("saliency")


def test_input_x_gradient_equals_captum_input_x_gradient(case: Case) -> None:
    case.compare("input-x-gradient")


@only("resnet18", "densenet", "mobilenet_v3_small", "regnet_y_400mf", "squeezenet1_1")
def test_guided_backprop_equals_captum_guided_backprop(case: Case) -> None:
    """Captum guides ``nn.ReLU`` modules only, Auditor every ReLU of the graph: DenseNet's
    functional ``F.relu`` after ``features`` is made a module in its eager twin
    (:class:`DenseNetWithReluModule`), which Captum then guides too."""
    case.compare("guided-backprop")
    # Guiding changes the map: the comparison is not the plain gradient's in disguise.
    plain = case.twin.reference("saliency").abs().amax(dim=1)
    guided = case.twin.reference("guided-backprop").abs().amax(dim=1)
    assert (guided - plain).abs().max() > 0.1 * guided.abs().max()
    if case.twin.name == "densenet":  # its functional ReLU unguided: 7% off, not 1e-4
        twin = case.twin
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
            unguided = CaptumGuidedBackprop(twin.model).attribute(twin.inputs, target=twin.targets)
        assert (unguided.abs().amax(dim=1) - guided).abs().max() > 0.01 * guided.abs().max()


@only("resnet18", "densenet", "mobilenet_v3_small", "regnet_y_400mf", "squeezenet1_1")
def test_guided_grad_cam_equals_captum_guided_grad_cam(case: Case) -> None:
    case.compare("guided-grad-cam")


@only("efficientnet_b0")
def test_guided_methods_do_not_apply_without_a_relu(case: Case) -> None:
    """EfficientNet uses SiLU throughout: guided backpropagation would be the plain
    gradient, which is what Captum's guided pass returns on its eager twin."""
    for key in ("guided-backprop", "guided-grad-cam"):
        assert case.not_applicable[key] == (
            "the model has no ReLU, so guided backpropagation is the plain gradient"
        )
    torch.testing.assert_close(
        case.twin.reference("guided-backprop"), case.twin.reference("saliency"), rtol=0, atol=0
    )


def test_integrated_gradients_equals_captum_with_the_same_baseline_and_steps(case: Case) -> None:
    case.compare("integrated-gradients")


@only("resnet18")
@pytest.mark.parametrize("kind", ["blur", "mean"])
def test_integrated_gradients_from_a_blurred_or_mean_colour_baseline_equal_captum(
    case: Case, kind: str
) -> None:
    twin = case.twin
    method = IntegratedGradients(replace(SETTINGS, ig_baseline=kind))
    baseline = PREPROCESSING.normalise(ig_baseline_images(twin.display, kind))
    reference = CaptumIntegratedGradients(twin.model).attribute(
        twin.inputs, baselines=baseline, target=twin.targets, n_steps=SETTINGS.ig_steps
    )
    assert_matches(method.raw_map(case.batch, case.context), reference)
    expected = method.postprocess(reference, twin.size)
    assert_matches(method.attribute(case.batch, case.context), expected)


def test_smoothgrad_equals_captum_noise_tunnel_given_the_same_noise(case: Case) -> None:
    noisy = SmoothGrad(SETTINGS).noisy_inputs(case.batch)
    torch.testing.assert_close(noisy, smoothgrad_noise(case.twin.inputs, case.twin.seeds))
    case.compare("smoothgrad")


@only("resnet18")
@pytest.mark.parametrize("base", ["grad-cam", "guided-backprop"])
def test_smoothgrad_of_another_base_is_its_captum_reference_averaged_over_the_noise(
    case: Case, base: str
) -> None:
    twin, n = case.twin, SETTINGS.smoothgrad_samples
    method = SmoothGrad(replace(SETTINGS, smoothgrad_base=base))
    noisy = smoothgrad_noise(twin.inputs, twin.seeds)
    targets = twin.targets.repeat_interleave(n)
    if base == "grad-cam":
        explainer = LayerGradCam(twin.model, twin.layer)
        each = explainer.attribute(noisy, target=targets, relu_attributions=False).squeeze(1)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
            each = CaptumGuidedBackprop(twin.model).attribute(noisy, target=targets)
    reference = each.view(IMAGES, n, *each.shape[1:]).mean(dim=1)
    assert_matches(method.raw_map(case.batch, case.context), reference)
    expected = method.postprocess(reference, twin.size)
    assert_matches(method.attribute(case.batch, case.context), expected)


def test_occlusion_equals_captum_occlusion(case: Case) -> None:
    case.compare("occlusion")


@only(*HEADS)
def test_cam_equals_the_class_weights_applied_to_the_eager_pooled_features(case: Case) -> None:
    case.compare("cam")


@only("resnet18", "efficientnet_b0", "regnet_y_400mf")
def test_grad_cam_is_cam_over_the_feature_map_area_on_a_gap_linear_head(case: Case) -> None:
    """With the target layer the feature map A of ``logits = W · mean_hw(A) + b``,
    ∂y_c/∂A_k = W[c, k]/(h·w) everywhere, so Grad-CAM before ReLU is CAM / (h·w), and
    the Grad-CAM map is relu(CAM) / (h·w) upsampled."""
    cam = case.raw("cam")
    area = cam.shape[-2] * cam.shape[-1]
    assert area > 1
    assert_matches(case.raw("grad-cam"), cam / area)
    assert_matches(
        case.methods["grad-cam"].attribute(case.batch, case.context),
        upsample_bilinear(relu(cam) / area, case.twin.size),
    )


@only("mobilenet_v3_small", "squeezenet1_1")
def test_cam_does_not_apply_without_a_gap_linear_head(case: Case) -> None:
    reason = case.not_applicable["cam"]
    if case.twin.name == "mobilenet_v3_small":  # pool → linear → hardswish → dropout → linear
        assert reason == (
            "needs a global-average-pooling + linear head; here the linear layer's input "
            "is not a global average pooling of a feature map (it comes from hardswish)"
        )
    else:  # dropout → 1×1 conv → relu → pool: no linear layer at all
        assert reason == (
            "needs a global-average-pooling + linear head; here the output is not "
            "produced by a linear layer (the last operation is adaptive_avg_pool2d)"
        )


def test_grad_cam_equals_captum_layer_grad_cam(case: Case) -> None:
    case.compare("grad-cam")


def test_grad_cam_plus_plus_equals_the_papers_formula_on_eager_hooks(case: Case) -> None:
    case.compare("grad-cam-plus-plus")


@only(*SCORE_CAM)
def test_score_cam_equals_pytorch_grad_cam_weights(case: Case) -> None:
    """Compared at the layer's resolution through pytorch-grad-cam's ``get_cam_weights``
    (its own output is min-maxed and resized by OpenCV), then after the same
    post-processing."""
    case.compare("score-cam")
    # The masked scores matter: the weights are far from uniform (0.32 of the largest value).
    reference = case.twin.reference("score-cam")
    uniform = case.twin.layer_values[0][: len(reference)].mean(dim=1)
    assert (reference - uniform).abs().max() > 0.1 * reference.abs().max()


@only(*SUPERPIXEL)
def test_lime_equals_captum_lime_on_the_same_superpixels_and_seed(case: Case) -> None:
    case.compare("lime")


@only(*SUPERPIXEL)
def test_kernel_shap_equals_captum_kernel_shap_on_the_same_superpixels_and_seed(
    case: Case,
) -> None:
    case.compare("kernel-shap")


def test_every_method_runs_or_says_why_not(case: Case) -> None:
    assert set(case.methods) | set(case.not_applicable) == set(METHODS)
    expected = {
        "mobilenet_v3_small": {"cam"},
        "squeezenet1_1": {"cam"},
        "efficientnet_b0": {"guided-backprop", "guided-grad-cam"},
    }.get(case.twin.name, set())
    assert set(case.not_applicable) == expected


@only("resnet18")
def test_captum_guided_backprop_on_a_torchscript_model_is_the_plain_gradient(case: Case) -> None:
    """Why Auditor does not call Captum's ``GuidedBackprop`` on the user's model: it hooks
    ``nn.ReLU`` modules, and a TorchScript model's submodules are ``RecursiveScriptModule``s,
    so nothing is guided and it silently returns the plain gradient: a map 0.86 × its
    largest value away from the guided one (resnet18, 64 px)."""
    twin = case.twin
    explainer = CaptumGuidedBackprop(case.context.model.module)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
        on_torchscript = explainer.attribute(twin.inputs, target=twin.targets)
    assert_matches(on_torchscript, twin.reference("saliency"))
    wrong = GuidedBackprop(SETTINGS).postprocess(on_torchscript, twin.size)
    right = GuidedBackprop(SETTINGS).postprocess(twin.reference("guided-backprop"), twin.size)
    assert (wrong - right).abs().max() > 0.5 * right.abs().max()
    assert_matches(case.methods["guided-backprop"].attribute(case.batch, case.context), right)


@only("resnet18")
def test_pytorch_grad_cam_plus_plus_differs_by_its_epsilon(case: Case) -> None:
    """Why pytorch-grad-cam's ``GradCAMPlusPlus`` is not the reference for Grad-CAM++.

    It adds ``eps = 1e-6`` to the denominator ``2g² + Σ_ab A · g³`` of α. On this resnet18's
    ``layer4`` (64 px) the denominators have a median of 2.5e-3 and 0.7% of them are
    below 1e-6, so the epsilon moves the channel weights by 0.5% of the largest and the
    min-maxed map by 0.0014 (more with smaller gradients: 3% and 0.025 with torchvision's
    classifier initialisation). Its weights equal the paper's formula with that epsilon
    to 1e-7 and its map equals Auditor's post-processing of that formula to 2e-6: the
    epsilon is the whole difference. (torch-cam 0.5's ``GradCAMpp`` is no reference
    either: it drops the division by the denominator.)"""
    twin = case.twin
    activations, grads, _ = twin.layer_values
    cam = GradCAMPlusPlus(twin.model, [twin.layer])
    try:
        theirs = torch.from_numpy(
            cam.get_cam_weights(twin.inputs, [twin.layer], None, activations.numpy(), grads.numpy())
        ).double()
        targets = [ClassifierOutputTarget(int(t)) for t in twin.targets]
        their_map = torch.from_numpy(cam(input_tensor=twin.inputs, targets=targets))
    finally:
        cam.activations_and_grads.release()

    def weights(eps: float) -> torch.Tensor:
        a, g = activations.double(), grads.double()
        denominator = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3 + eps
        alpha = torch.where(denominator != 0, g**2 / denominator, torch.zeros_like(g))
        return (alpha * g.clamp(min=0)).sum(dim=(2, 3))

    assert_matches(theirs, weights(1e-6), rtol=1e-5)
    exact = weights(0.0)
    assert (theirs - exact).abs().max() > 1e-3 * exact.abs().max()

    def display(raw: torch.Tensor) -> torch.Tensor:
        return minmax(upsample_bilinear(relu(raw.float()), twin.size))

    with_eps = display(grad_cam_plus_plus(activations, grads, eps=1e-6))
    assert (their_map - with_eps).abs().max() < 1e-5
    ours = minmax(case.methods["grad-cam-plus-plus"].attribute(case.batch, case.context))
    assert_matches(ours, display(grad_cam_plus_plus(activations, grads, eps=0.0)))
    assert (their_map - ours).abs().max() > 5e-4
