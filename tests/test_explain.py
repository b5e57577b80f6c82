"""Explanation methods on hand-set weights with exact expected maps, and the explain stage."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from auditor.explain import METHODS, GradCam
from auditor.explain.engine import gradient_passes
from auditor.explain.postprocess import minmax, upsample_bilinear
from auditor.explain.saliency import Saliency
from auditor.load import LoadedModel, OutputKind
from auditor.taps import TappedModel


class OneByOne(nn.Module):
    """1×1 convolution → global average pool → linear, every weight set by hand."""

    def __init__(self, outputs: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, outputs, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]).view(2, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[3.0, -1.0], [0.5, 2.0]])[:outputs])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def as_loaded(module: nn.Module) -> LoadedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module.eval())
    return LoadedModel(scripted, TappedModel(scripted), None, "", 0, torch.device("cpu"), 2)  # type: ignore[arg-type]


X = torch.tensor([[[[1.0, 0.0], [2.0, -1.0]], [[0.0, 1.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)


def test_grad_cam_equals_the_closed_form() -> None:
    # A = V x per pixel; score_0 = sum_c W[0,c] mean(A_c), so alpha_c = W[0,c] / 4 and
    # Grad-CAM = relu(sum_c alpha_c A_c).
    v = np.array([[1.0, 2.0], [-1.0, 0.5]])
    w = np.array([3.0, -1.0])
    x = X[0].numpy()
    activations = np.einsum("ci,ihw->chw", v, x)
    expected = np.maximum(np.einsum("c,chw->hw", w / 4, activations), 0)
    passes = gradient_passes(as_loaded(OneByOne()), X, torch.tensor([0]), OutputKind.LOGITS, "conv")
    np.testing.assert_allclose(GradCam().attribute(passes)[0].numpy(), expected, rtol=1e-6)


def test_saliency_equals_the_closed_form() -> None:
    # d score_1 / d x_i = sum_c W[1,c] V[c,i] / 4 at every pixel.
    v = np.array([[1.0, 2.0], [-1.0, 0.5]])
    w = np.array([0.5, 2.0])
    gradient = (w @ v) / 4
    passes = gradient_passes(as_loaded(OneByOne()), X, torch.tensor([1]), OutputKind.LOGITS, "conv")
    np.testing.assert_allclose(
        passes.input_grads[0].numpy(), np.broadcast_to(gradient[:, None, None], (2, 2, 2))
    )
    np.testing.assert_allclose(
        Saliency().attribute(passes)[0].numpy(), np.full((2, 2), np.abs(gradient).max())
    )


def test_binary_single_logit_explains_class_zero_with_the_negated_logit() -> None:
    model = as_loaded(OneByOne(outputs=1))
    positive = gradient_passes(model, X, torch.tensor([1]), OutputKind.BINARY_LOGIT, "conv")
    negative = gradient_passes(model, X, torch.tensor([0]), OutputKind.BINARY_LOGIT, "conv")
    torch.testing.assert_close(negative.input_grads, -positive.input_grads)
    torch.testing.assert_close(negative.activation_grads, -positive.activation_grads)


def test_batched_passes_equal_one_image_at_a_time() -> None:
    model = as_loaded(OneByOne())
    images = torch.randn(3, 2, 2, 2)
    targets = torch.tensor([0, 1, 0])
    batched = GradCam().attribute(
        gradient_passes(model, images, targets, OutputKind.LOGITS, "conv")
    )
    for i in range(3):
        single = GradCam().attribute(
            gradient_passes(model, images[i : i + 1], targets[i : i + 1], OutputKind.LOGITS, "conv")
        )
        torch.testing.assert_close(batched[i : i + 1], single)


def test_postprocessing_steps() -> None:
    maps = torch.tensor([[[0.0, 2.0], [4.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]]])
    torch.testing.assert_close(minmax(maps)[0], torch.tensor([[0.0, 0.5], [1.0, 0.5]]))
    assert torch.equal(minmax(maps)[1], torch.zeros(2, 2)), "a constant map has no evidence"
    up = upsample_bilinear(maps[:1], (4, 4))
    assert up.shape == (1, 4, 4) and up[0, 0, 0] == 0.0 and up[0, 3, 0] == 4.0


def test_registry_keys_are_kebab_case_and_methods_cite_their_paper() -> None:
    assert set(METHODS) == {"grad-cam", "saliency"}
    for key, method in METHODS.items():
        assert key == method.key and key == key.lower() and " " not in key
        assert "20" in method.paper and method.reading
        assert all(
            step in {"relu", "abs-max-over-channels", "upsample-bilinear"}
            for step in method.postprocessing
        )


class Soft(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = OneByOne()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def test_probabilities_are_explained_as_they_are() -> None:
    passes = gradient_passes(
        as_loaded(Soft()), X, torch.tensor([0]), OutputKind.PROBABILITIES, "net.conv"
    )
    x = X.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(Soft().eval()(x)[0, 0], x)
    torch.testing.assert_close(passes.input_grads, expected)
