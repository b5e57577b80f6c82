"""Explanation methods on hand-set weights with exact expected maps, and the explain stage."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import auditor.explain
from auditor.explain import METHODS, ExplainContext, ExplainSettings, GradientPasses, Method
from auditor.explain.cam import Cam
from auditor.explain.gradcam import GradCam
from auditor.explain.gradcam_plusplus import GradCamPlusPlus
from auditor.explain.postprocess import STEPS, minmax, upsample_bilinear
from auditor.explain.saliency import Saliency
from auditor.load import LoadedModel, OutputKind
from auditor.taps import TappedModel
from tests.helpers import explain_context, gradient_passes, method_map

SETTINGS = ExplainSettings(methods=tuple(METHODS))


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


def context_of(model: LoadedModel, kind: OutputKind, layer: str | None) -> ExplainContext:
    return explain_context(model, kind, layer)


def attribute(
    method: type, passes: GradientPasses, model: LoadedModel, kind: OutputKind
) -> torch.Tensor:
    return method_map(method.key, passes, context_of(model, kind, "conv"))


X = torch.tensor([[[[1.0, 0.0], [2.0, -1.0]], [[0.0, 1.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)


def test_grad_cam_equals_the_closed_form() -> None:
    # A = V x per pixel; score_0 = sum_c W[0,c] mean(A_c), so alpha_c = W[0,c] / 4 and
    # Grad-CAM = relu(sum_c alpha_c A_c).
    v = np.array([[1.0, 2.0], [-1.0, 0.5]])
    w = np.array([3.0, -1.0])
    x = X[0].numpy()
    activations = np.einsum("ci,ihw->chw", v, x)
    expected = np.maximum(np.einsum("c,chw->hw", w / 4, activations), 0)
    model = as_loaded(OneByOne())
    passes = gradient_passes(model, X, torch.tensor([0]), OutputKind.LOGITS, "conv")
    np.testing.assert_allclose(
        attribute(GradCam, passes, model, OutputKind.LOGITS)[0].numpy(), expected, rtol=1e-6
    )


def test_cam_equals_the_closed_form_and_grad_cam_is_its_relu_over_the_area() -> None:
    v = np.array([[1.0, 2.0], [-1.0, 0.5]])
    w = np.array([3.0, -1.0])
    activations = np.einsum("ci,ihw->chw", v, X[0].numpy())
    expected = np.einsum("c,chw->hw", w, activations)
    model = as_loaded(OneByOne())
    passes = gradient_passes(model, X, torch.tensor([0]), OutputKind.LOGITS, "conv")
    cam = attribute(Cam, passes, model, OutputKind.LOGITS)[0].numpy()
    np.testing.assert_allclose(cam, expected, rtol=1e-6)
    grad_cam = attribute(GradCam, passes, model, OutputKind.LOGITS)[0].numpy()
    np.testing.assert_allclose(grad_cam, np.maximum(cam, 0) / 4, rtol=1e-6)


def test_grad_cam_plus_plus_equals_the_papers_formula() -> None:
    # On a linear head the gradient is W[c, k] / (h w) everywhere: with g constant per
    # channel, alpha = g² / (2 g² + S_k g³) where S_k is the channel's sum.
    v = np.array([[1.0, 2.0], [-1.0, 0.5]])
    w = np.array([3.0, -1.0])
    activations = np.einsum("ci,ihw->chw", v, X[0].numpy())
    g = w / 4
    sums = activations.sum(axis=(1, 2))
    alpha = g**2 / (2 * g**2 + sums * g**3)
    weights = alpha * np.maximum(g, 0) * 4  # summed over the 4 locations
    expected = np.maximum(np.einsum("c,chw->hw", weights, activations), 0)
    model = as_loaded(OneByOne())
    passes = gradient_passes(model, X, torch.tensor([0]), OutputKind.LOGITS, "conv")
    result = attribute(GradCamPlusPlus, passes, model, OutputKind.LOGITS)[0].numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_saliency_equals_the_closed_form() -> None:
    # d score_1 / d x_i = sum_c W[1,c] V[c,i] / 4 at every pixel.
    v = np.array([[1.0, 2.0], [-1.0, 0.5]])
    w = np.array([0.5, 2.0])
    gradient = (w @ v) / 4
    model = as_loaded(OneByOne())
    passes = gradient_passes(model, X, torch.tensor([1]), OutputKind.LOGITS, "conv")
    np.testing.assert_allclose(
        passes.input_grads[0].numpy(), np.broadcast_to(gradient[:, None, None], (2, 2, 2))
    )
    np.testing.assert_allclose(
        attribute(Saliency, passes, model, OutputKind.LOGITS)[0].numpy(),
        np.full((2, 2), np.abs(gradient).max()),
    )


def test_binary_single_logit_explains_class_zero_with_the_negated_logit() -> None:
    model = as_loaded(OneByOne(outputs=1))
    positive = gradient_passes(model, X, torch.tensor([1]), OutputKind.BINARY_LOGIT, "conv")
    negative = gradient_passes(model, X, torch.tensor([0]), OutputKind.BINARY_LOGIT, "conv")
    torch.testing.assert_close(negative.input_grads, -positive.input_grads)
    torch.testing.assert_close(negative.activation_grads, -positive.activation_grads)
    cam_positive = Cam(SETTINGS).from_passes(
        positive, context_of(model, OutputKind.BINARY_LOGIT, "conv")
    )
    cam_negative = Cam(SETTINGS).from_passes(
        negative, context_of(model, OutputKind.BINARY_LOGIT, "conv")
    )
    torch.testing.assert_close(cam_negative, -cam_positive)


def test_batched_passes_equal_one_image_at_a_time() -> None:
    model = as_loaded(OneByOne())
    images = torch.randn(3, 2, 2, 2)
    targets = torch.tensor([0, 1, 0])
    kind = OutputKind.LOGITS
    batched = gradient_passes(model, images, targets, kind, "conv")
    for method in (GradCam, GradCamPlusPlus, Cam, Saliency):
        together = attribute(method, batched, model, kind)
        for i in range(3):
            alone = gradient_passes(model, images[i : i + 1], targets[i : i + 1], kind, "conv")
            torch.testing.assert_close(together[i : i + 1], attribute(method, alone, model, kind))


def test_postprocessing_steps() -> None:
    maps = torch.tensor([[[0.0, 2.0], [4.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]]])
    torch.testing.assert_close(minmax(maps)[0], torch.tensor([[0.0, 0.5], [1.0, 0.5]]))
    assert torch.equal(minmax(maps)[1], torch.zeros(2, 2)), "a constant map has no evidence"
    up = upsample_bilinear(maps[:1], (4, 4))
    assert up.shape == (1, 4, 4) and up[0, 0, 0] == 0.0 and up[0, 3, 0] == 4.0


# "Author et al., 2017, Title" or "Author and Author, 2017, Title", then an optional arXiv id.
CITATION = re.compile(r"^[A-Z][a-z]+( et al\.| and [A-Z][a-z]+), (19|20)\d\d, \S.{3,}$")


def _method_modules() -> dict[str, type]:
    """Every Method subclass defined in a module of auditor/explain, by its module."""
    found = {}
    for info in pkgutil.iter_modules(auditor.explain.__path__):
        module = importlib.import_module(f"auditor.explain.{info.name}")
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, Method)
                and not inspect.isabstract(value)
                and value.__module__ == module.__name__
            ):
                found[info.name] = value
    return found


def test_every_method_file_is_registered_once_under_its_file_name() -> None:
    modules = _method_modules()

    assert sorted(METHODS.values(), key=lambda c: c.key) == sorted(
        modules.values(), key=lambda c: c.key
    ), "a method module whose class is not in METHODS (or the reverse)"
    for name, cls in modules.items():
        assert cls.key.replace("-", "") == name.replace("_", ""), f"{name}.py has {cls.key!r}"


@pytest.mark.parametrize("key", list(METHODS))
def test_each_method_cites_its_paper_and_names_its_steps(key: str) -> None:
    method = METHODS[key](SETTINGS)

    assert CITATION.match(method.paper), method.paper
    assert method.reading and method.caveat and method.implementation
    assert all(step in STEPS and step != "min-max" for step in method.postprocessing)


def test_the_citation_pattern_rejects_a_bare_year() -> None:
    assert not CITATION.match("2017")
    assert not CITATION.match("see the 2020 paper")
    assert CITATION.match("Lundberg and Lee, 2017, A Unified Approach")


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
