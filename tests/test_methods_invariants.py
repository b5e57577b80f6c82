"""Explanation methods where the answer is known exactly, and the invariants they must keep.

A linear model's attributions have closed forms; integrated gradients add up to the
score's change from the baseline (completeness); LIME and KernelSHAP depend on an
image's own seed only; a single binary logit explains class 0 with the negated logit.
Auditor runs on TorchScript models (scripted and traced, saved and loaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from auditor.explain import METHODS, Batch, ExplainContext, ExplainSettings, Method
from auditor.explain.engine import build_context
from auditor.explain.postprocess import relu, upsample_bilinear
from auditor.images import Preprocessing
from auditor.load import OutputKind
from tests.helpers import (
    TinyNet,
    assert_matches,
    calibrated,
    ig_baseline_images,
    loaded_model,
    smooth_images,
    torchscript_twin,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MODES = ("script", "trace", "export")
IDENTITY = Preprocessing(3, None, None, None)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread (see tests/test_methods_reference.py: on a shared 2-core machine
    two threads waiting on each other are several times slower for these small passes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Subject:
    """A TorchScript model with Auditor's context and one batch with its gradient passes."""

    context: ExplainContext
    methods: dict[str, Method]
    not_applicable: dict[str, str]
    batch: Batch

    def raw(self, key: str) -> torch.Tensor:
        return self.methods[key].raw_map(self.batch, self.context)

    def map(self, key: str) -> torch.Tensor:
        return self.methods[key].attribute(self.batch, self.context)


def subject(
    module: torch.jit.ScriptModule,
    display: torch.Tensor,
    targets: list[int],
    seeds: list[int],
    settings: ExplainSettings,
    layer: str | None = None,
    kind: OutputKind = OutputKind.LOGITS,
    preprocessing: Preprocessing = IDENTITY,
) -> Subject:
    context, methods, not_applicable = build_context(
        loaded_model(module), kind, layer, settings, preprocessing
    )
    context.forward_batch, context.backward_batch = 64, 16
    context.mean_colour = display.mean(dim=(0, 2, 3))
    batch = Batch(
        inputs=preprocessing.normalise(display),
        display=display,
        targets=torch.tensor(targets),
        seeds=seeds,
    )
    if any(m.needs_passes for m in methods):
        batch.passes = context.passes(batch.inputs, batch.targets)
    return Subject(context, {m.key: m for m in methods}, not_applicable, batch)


# --- A linear model: logits = flatten(x) · Wᵀ + b, every attribution in closed form ---

SIDE = 16


class LinearClassifier(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1) @ self.weight.t() + self.bias


def linear_weights() -> torch.Tensor:
    """``(2, 3·16·16)`` hand-set weights: multiples of 1/8 in [-0.75, 0.75], both signs."""
    index = torch.arange(3 * SIDE * SIDE)
    return torch.stack([((index * 7 + c * 5) % 13 - 6) / 8 for c in range(2)]).float()


WEIGHTS = linear_weights()
LINEAR_SETTINGS = ExplainSettings(
    methods=tuple(METHODS),
    ig_steps=8,
    smoothgrad_samples=4,
    occlusion_window=4,
    occlusion_stride=2,
    superpixels=8,
    shap_samples=64,
    lime_samples=32,
)


@pytest.fixture(scope="module", params=MODES)
def linear(request: pytest.FixtureRequest) -> Subject:
    model = LinearClassifier(WEIGHTS, torch.tensor([0.5, -0.25])).eval()
    display = smooth_images(2, SIDE, seed=3)
    return subject(
        torchscript_twin(model, request.param, SIDE), display, [0, 1], [5, 6], LINEAR_SETTINGS
    )


def class_weights(linear: Subject) -> torch.Tensor:
    """``(B, 3, 16, 16)``: each image's target row of W, as an image."""
    return WEIGHTS[linear.batch.targets].view(-1, 3, SIDE, SIDE)


def test_linear_saliency_is_the_largest_absolute_weight_over_channels(linear: Subject) -> None:
    weights = class_weights(linear)
    assert torch.equal(linear.raw("saliency"), weights)
    assert torch.equal(linear.map("saliency"), weights.abs().amax(dim=1))


def test_linear_input_x_gradient_is_the_input_times_the_weights(linear: Subject) -> None:
    product = linear.batch.inputs * class_weights(linear)
    torch.testing.assert_close(linear.raw("input-x-gradient"), product, rtol=0, atol=0)
    torch.testing.assert_close(linear.map("input-x-gradient"), relu(product.sum(dim=1)))


def test_linear_integrated_gradients_from_black_are_the_input_times_the_weights(
    linear: Subject,
) -> None:
    """The gradient is W[c] on the whole path, so IG = (x - 0) · W[c]: exact up to the
    rounding of the Gauss-Legendre weights' sum (1 ± 1e-7)."""
    product = linear.batch.inputs * class_weights(linear)
    assert_matches(linear.raw("integrated-gradients"), product, rtol=1e-6)
    assert_matches(linear.map("integrated-gradients"), relu(product.sum(dim=1)), rtol=1e-6)


def test_linear_smoothgrad_is_saliency(linear: Subject) -> None:
    """Noise does not change a linear model's gradient: the mean of the noisy copies'
    gradients is W[c] exactly."""
    assert torch.equal(linear.raw("smoothgrad"), class_weights(linear))
    assert torch.equal(linear.map("smoothgrad"), linear.map("saliency"))


def test_linear_occlusion_is_the_mean_window_sum_over_covering_windows(linear: Subject) -> None:
    """Zeroing a window drops the score by Σ_window x · W[c] (over all channels); a pixel's
    attribution is the mean drop of the windows that cover it (1, 2 or 4 of them here:
    4-pixel windows, stride 2). Captum computes each drop as f(x) - f(occluded), a
    difference of two sums of 768 products, hence 1e-5 rather than 1e-6."""
    contribution = (linear.batch.inputs * class_weights(linear)).sum(dim=1).double().numpy()
    side, stride = 4, 2
    total = np.zeros_like(contribution)
    count = np.zeros_like(contribution)
    for top in range(0, SIDE - side + 1, stride):
        for left in range(0, SIDE - side + 1, stride):
            window = (slice(None), slice(top, top + side), slice(left, left + side))
            total[window] += contribution[window].sum(axis=(1, 2))[:, None, None]
            count[window] += 1
    expected = torch.from_numpy(total / count)
    assert sorted(np.unique(count)) == [1, 2, 4]
    raw = linear.raw("occlusion")
    assert_matches(raw, expected.unsqueeze(1).expand_as(raw), rtol=1e-5)
    assert_matches(linear.map("occlusion"), relu(expected), rtol=1e-5)


def test_linear_kernel_shap_is_each_superpixels_contribution(linear: Subject) -> None:
    """For an additive model the Shapley value of a superpixel is its own Σ x · W[c]
    (baseline 0), and KernelSHAP's weighted regression recovers it exactly (64 coalitions
    for 8 superpixels)."""
    contribution = (linear.batch.inputs * class_weights(linear)).sum(dim=1)
    expected = []
    for image, segments in enumerate(linear.batch.superpixels(LINEAR_SETTINGS.superpixels)):
        assert int(segments.max()) + 1 >= 6
        sums = torch.zeros(int(segments.max()) + 1).index_add_(
            0, segments.flatten(), contribution[image].flatten()
        )
        expected.append(sums[segments])
    painted = torch.stack(expected)
    raw = linear.raw("kernel-shap")
    assert_matches(raw, painted.unsqueeze(1).expand_as(raw), rtol=1e-5)
    assert_matches(linear.map("kernel-shap"), relu(painted), rtol=1e-5)


def test_linear_model_layer_guided_and_cam_methods_say_why_they_do_not_apply(
    linear: Subject,
) -> None:
    no_layer = "the model has no layer with a spatial (C×H×W) or token output to explain"
    assert linear.not_applicable == {
        "guided-backprop": "the model has no ReLU, so guided backpropagation is the plain gradient",
        "cam": "needs a global-average-pooling + linear head; here the output is not "
        "produced by a linear layer (the last operation is add)",
        "grad-cam": no_layer,
        "grad-cam-plus-plus": no_layer,
        "guided-grad-cam": no_layer,
        "score-cam": no_layer,
    }


# --- Integrated gradients: completeness ---


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["black", "blur", "mean"])
def test_integrated_gradients_add_up_to_the_score_change_from_the_baseline(
    mode: str, kind: str
) -> None:
    """Completeness: Σ over pixels and channels of the raw attribution = f(x) - f(x') for
    each image. The quadrature converges slowly on a ReLU network (its integrand is
    piecewise constant along the path): with 128 steps the gap measured 1.1% (black),
    0.08% (blur) and 0.45% (mean) of |f(x) - f(x')|. Random-weight torchvision models at
    64 px need far more steps (resnet18: 41% from black at 64 steps), so a small
    convolutional network stands in."""
    preprocessing = Preprocessing(3, None, MEAN, STD)
    torch.manual_seed(0)
    net = calibrated(TinyNet(outputs=3), preprocessing.normalise(smooth_images(8, 32, seed=2)))
    display = smooth_images(2, 32, seed=4)
    settings = ExplainSettings(methods=("integrated-gradients",), ig_baseline=kind, ig_steps=128)
    case = subject(
        torchscript_twin(net, mode, 32), display, [0, 2], [0, 1], settings,
        preprocessing=preprocessing,
    )  # fmt: skip
    total = case.raw("integrated-gradients").sum(dim=(1, 2, 3))
    targets = case.batch.targets.view(-1, 1)
    with torch.no_grad():
        at_image = net(preprocessing.normalise(display)).gather(1, targets).squeeze(1)
        at_baseline = net(preprocessing.normalise(ig_baseline_images(display, kind)))
        change = at_image - at_baseline.gather(1, targets).squeeze(1)
    assert change.abs().min() > 0.05, "a score change this small would prove little"
    torch.testing.assert_close(total, change, rtol=0.02, atol=0)


# --- LIME and KernelSHAP: each image's map depends on its own seed only ---

SEEDED = ("lime", "kernel-shap")


@pytest.fixture(scope="module")
def mobilenet() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    preprocessing = Preprocessing(3, None, MEAN, STD)
    model = calibrated(
        torchvision.models.mobilenet_v3_small(num_classes=3),
        preprocessing.normalise(smooth_images(8, 64, seed=2)),
    )
    return torchscript_twin(model, "script", 64)


SEEDED_SETTINGS = ExplainSettings(methods=SEEDED, superpixels=8, lime_samples=32, shap_samples=32)


def seeded_maps(
    module: torch.jit.ScriptModule, order: list[int], seeds: list[int]
) -> dict[str, torch.Tensor]:
    """Both methods' maps for images ``order`` of a fixed set of three, with ``seeds``."""
    display = smooth_images(3, 64, seed=7)[order]
    targets = [[0, 1, 2][i] for i in order]
    preprocessing = Preprocessing(3, None, MEAN, STD)
    case = subject(module, display, targets, seeds, SEEDED_SETTINGS, preprocessing=preprocessing)
    return {key: case.map(key) for key in SEEDED}


@pytest.mark.parametrize("key", SEEDED)
def test_superpixel_methods_repeat_exactly_with_the_same_seeds(
    mobilenet: torch.jit.ScriptModule, key: str
) -> None:
    state = torch.get_rng_state()
    first = seeded_maps(mobilenet, [0, 1, 2], [10, 11, 12])[key]
    assert torch.equal(torch.get_rng_state(), state), "the global random state was changed"
    again = seeded_maps(mobilenet, [0, 1, 2], [10, 11, 12])[key]
    assert torch.equal(first, again)
    assert first.abs().amax(dim=(1, 2)).min() > 0


@pytest.mark.parametrize("key", SEEDED)
def test_superpixel_methods_change_with_an_images_seed_and_only_its_own(
    mobilenet: torch.jit.ScriptModule, key: str
) -> None:
    first = seeded_maps(mobilenet, [0, 1, 2], [10, 11, 12])[key]
    reseeded = seeded_maps(mobilenet, [0, 1, 2], [99, 11, 12])[key]
    assert (reseeded[0] - first[0]).abs().max() > 1e-3 * first[0].abs().max()
    assert torch.equal(reseeded[1:], first[1:])


@pytest.mark.parametrize("key", SEEDED)
def test_superpixel_methods_do_not_depend_on_the_other_images_of_the_batch(
    mobilenet: torch.jit.ScriptModule, key: str
) -> None:
    together = seeded_maps(mobilenet, [0, 1, 2], [10, 11, 12])[key]
    reordered = seeded_maps(mobilenet, [2, 0], [12, 10])[key]
    alone = seeded_maps(mobilenet, [1], [11])[key]
    assert torch.equal(reordered[0], together[2])
    assert torch.equal(reordered[1], together[0])
    assert torch.equal(alone[0], together[1])


# --- A single binary logit: class 0 is explained with -z ---


@pytest.fixture(scope="module", params=MODES)
def binary(request: pytest.FixtureRequest) -> tuple[Subject, torchvision.models.ResNet]:
    """resnet18 with one output logit z; each of two images explained for class 0 and 1."""
    torch.manual_seed(0)
    preprocessing = Preprocessing(3, None, MEAN, STD)
    model = calibrated(
        torchvision.models.resnet18(num_classes=1),
        preprocessing.normalise(smooth_images(8, 64, seed=2)),
    )
    display = smooth_images(2, 64, seed=8)[[0, 0, 1, 1]]
    settings = ExplainSettings(methods=("cam", "grad-cam"))
    case = subject(
        torchscript_twin(model, request.param, 64), display, [0, 1, 0, 1], [0, 0, 1, 1],
        settings, layer="layer4", kind=OutputKind.BINARY_LOGIT, preprocessing=preprocessing,
    )  # fmt: skip
    return case, model


def test_binary_logit_grad_cam_of_class_zero_has_the_negated_weights(
    binary: tuple[Subject, torchvision.models.ResNet],
) -> None:
    case, _ = binary
    raw = case.raw("grad-cam")
    torch.testing.assert_close(raw[0::2], -raw[1::2], rtol=0, atol=0)
    assert raw.abs().max() > 0
    maps = case.map("grad-cam")
    torch.testing.assert_close(maps[0::2], upsample_bilinear(relu(-raw[1::2]), (64, 64)))


def test_binary_logit_cam_is_the_signed_weight_on_the_eager_features(
    binary: tuple[Subject, torchvision.models.ResNet],
) -> None:
    """CAM of class 1 is Σ_k W[0, k] A_k; of class 0, the same with -W (score -z); and
    Grad-CAM is CAM / (h·w) for both, as for any GAP + linear head."""
    case, model = binary
    features: list[torch.Tensor] = []
    handle = model.layer4.register_forward_hook(lambda _m, _i, out: features.append(out))
    try:
        with torch.no_grad():
            model(case.batch.inputs)
    finally:
        handle.remove()
    weight = model.fc.weight.detach()[0]
    sign = torch.tensor([-1.0, 1.0, -1.0, 1.0]).view(-1, 1, 1)
    expected = sign * torch.einsum("k,bkhw->bhw", weight, features[0])
    cam = case.raw("cam")
    assert_matches(cam, expected)
    area = cam.shape[-2] * cam.shape[-1]
    assert_matches(case.raw("grad-cam"), cam / area)
    assert_matches(case.map("cam"), upsample_bilinear(expected, (64, 64)))


def test_superpixels_fall_back_to_a_grid_where_slic_merges_everything() -> None:
    from auditor.explain.superpixels import grid_segments, slic_segments

    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    segments = slic_segments(noise, 16)
    assert int(segments.max()) + 1 >= 4, "never a single feature"
    grid = grid_segments(64, 64, 16)
    assert int(grid.max()) + 1 == 16 and (grid.flatten().bincount() == 256).all()
