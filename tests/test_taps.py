"""The tap layer against eager hooks and Captum on torchvision models, scripted and traced."""

from __future__ import annotations

import io
import warnings
from functools import cache

import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from captum.attr import Saliency as CaptumSaliency
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from auditor.explain import GradientPasses
from auditor.load import LoadedModel, OutputKind
from auditor.taps import Model, tap_model
from tests.helpers import (
    TinyNet,
    explain_context,
    gradient_passes,
    method_map,
    torchscript_twin,
)

SIZE = 64
ARCHITECTURES = {
    "resnet18": "layer4",
    "densenet121": "features",
    "mobilenet_v3_small": "features",
    "efficientnet_b0": "features",
}


@cache
def eager(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=3).eval()
    return model


def compiled(model: nn.Module, kind: str) -> Model:
    """Script, trace or export, then save and load, as a user's file would be."""
    if kind == "export":
        return torchscript_twin(model, kind, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "script":
            module = torch.jit.script(model)
        else:
            module = torch.jit.trace(model, torch.rand(1, 3, SIZE, SIZE), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        buffer.seek(0)
        return torch.jit.load(buffer)


def loaded(module: Model) -> LoadedModel:
    return LoadedModel(module, tap_model(module), None, "", 0, torch.device("cpu"), 3)  # type: ignore[arg-type]


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal within ``rtol`` of the expected tensor's largest magnitude (random init: tiny maps)."""
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_every_tapped_module_output_equals_the_eager_hook_output(name: str, kind: str) -> None:
    model = eager(name)
    tapped = tap_model(compiled(model, kind))
    paths = [site.path for site in tapped.sites]
    x = torch.rand(2, 3, SIZE, SIZE)
    expected: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(p).register_forward_hook(
            lambda _m, _i, out, p=p: expected.__setitem__(p, out.detach().clone())
        )
        for p in paths
    ]
    try:
        reference = model(x)
    finally:
        for handle in handles:
            handle.remove()
    output, taps = tapped(x, paths)
    torch.testing.assert_close(output, reference)
    # resnet18 has in-place `out += identity` after bn2 and mobilenet `result += input`
    # inside an `if self.use_res_connect`: the taps must hold the values before them.
    assert "layer2.0.bn2" in paths or "features.3.block" in paths
    for path, value in zip(paths, taps, strict=True):
        torch.testing.assert_close(value, expected[path], msg=lambda m, p=path: f"{p}: {m}")


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_grad_cam_and_saliency_equal_captum_on_the_eager_twin(name: str, kind: str) -> None:
    model, layer = eager(name), ARCHITECTURES[name]
    x = torch.rand(3, 3, SIZE, SIZE)
    targets = torch.tensor([0, 2, 1])
    reference_cam = LayerGradCam(model, model.get_submodule(layer)).attribute(
        x, target=targets, relu_attributions=True
    )
    reference_cam = LayerAttribution.interpolate(reference_cam, (SIZE, SIZE), "bilinear").squeeze(1)
    reference_saliency = CaptumSaliency(model).attribute(x, target=targets, abs=True).amax(dim=1)
    subject = loaded(compiled(model, kind))
    for _ in range(3):  # the third call runs after TorchScript's executor has optimised
        context = explain_context(subject, OutputKind.LOGITS, layer)
        passes = context.passes(x, targets)
        assert_close_relative(method_map("grad-cam", passes, context), reference_cam)
        assert_close_relative(method_map("saliency", passes, context), reference_saliency)


def test_default_target_layer_is_the_outermost_owner_of_the_last_spatial_output() -> None:
    tapped = tap_model(compiled(eager("resnet18"), "script"))
    owners = [s.path for s in tapped.sites if s.order == tapped.site("layer4").order]
    assert sorted(owners) == ["layer4", "layer4.1", "layer4.1.relu"]


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_flops_by_module_add_up_to_flop_counter_mode(name: str, kind: str) -> None:
    module = compiled(eager(name), kind)
    x = torch.rand(1, 3, SIZE, SIZE)
    total, per_module = tap_model(module).flops_by_module(x)
    with FlopCounterMode(display=False) as counter:
        module(x)
    assert total == counter.get_total_flops()
    top_level = [p for p in per_module if "." not in p]
    assert sum(per_module[p] for p in top_level) == total


def test_flops_of_a_hand_sized_network() -> None:
    module = compiled_tiny(TinyNet())
    _, per_module = tap_model(module).flops_by_module(torch.rand(1, 3, 16, 16))
    # conv 3→6, 3×3, 16×16 output; conv 6→8, 3×3, 8×8 output; linear 8→2.
    assert per_module["features.0"] == 2 * 6 * 16 * 16 * 3 * 9
    assert per_module["features.4"] == 2 * 8 * 8 * 8 * 6 * 9
    assert per_module["classifier"] == 2 * 2 * 8
    assert per_module["features"] == per_module["features.0"] + per_module["features.4"]


def compiled_tiny(model: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(model.eval())


def test_input_channels_come_from_the_first_convolution() -> None:
    assert tap_model(compiled_tiny(TinyNet(in_channels=1))).input_channels() == 1
    assert tap_model(compiled_tiny(TinyNet(in_channels=3))).input_channels() == 3


def test_unknown_module_path_is_a_key_error_naming_close_modules() -> None:
    tapped = tap_model(compiled_tiny(TinyNet()))
    with pytest.raises(KeyError, match=r"features\.0"):
        tapped(torch.rand(1, 3, 8, 8), ["features.9"])


def test_gradient_passes_leave_the_module_untouched() -> None:
    module = compiled_tiny(TinyNet())
    before = {k: v.clone() for k, v in module.state_dict().items()}
    passes = gradient_passes(
        loaded(module), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), OutputKind.LOGITS, "features"
    )
    assert isinstance(passes, GradientPasses)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())
