"""Counterfactual explanations: on a model that reads a marker, the segment counterfactual
removes the marker (IoU >= 0.5 with its mask, at most two segments) and the gradient
one changes it; every counterfactual called valid is valid on a fresh forward pass;
the caps on passes hold (counted here, not taken from the code's own count)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from auditor.counterfactual.gradient import gradient_counterfactuals
from auditor.counterfactual.segments import segment_counterfactual
from auditor.counterfactual.stage import fill_image
from auditor.explain.superpixels import slic_segments

SIDE = 32


class MarkerNet(nn.Module):
    """Calls class 1 when the top-left 6 × 6 corner is red: logit difference 12·(r - g - 0.3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, :6, :6].mean(dim=(2, 3))
        evidence = 12 * (corner[:, 0] - corner[:, 1] - 0.3)
        return torch.stack([-evidence / 2, evidence / 2], dim=1)


def _marked(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth grey-green image with a red marker in its top-left corner, and the mask."""
    rng = np.random.default_rng(seed)
    image = np.full((3, SIDE, SIDE), 0.45, dtype=np.float32)
    image[1] += 0.1
    image += rng.normal(0, 0.02, size=image.shape).astype(np.float32)
    image[:, 2:20, 16:30] = [[[0.3]], [[0.6]], [[0.3]]]  # a lesion-like blob elsewhere
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    mask[:6, :6] = True
    image[:, mask] = np.array([[0.95], [0.1], [0.1]], dtype=np.float32)
    return torch.from_numpy(image.clip(0, 1)), torch.from_numpy(mask)


class Counted:
    """The model's class probabilities, counting every image it scores."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.images = model, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        with torch.no_grad():
            return torch.softmax(self.model(x), dim=1)


@pytest.fixture(scope="module")
def model() -> torch.jit.ScriptModule:
    return torch.jit.script(MarkerNet().eval())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fill", ["mean", "black"])
def test_the_segment_counterfactual_of_a_marker_reading_model_removes_the_marker(
    model: torch.jit.ScriptModule, seed: int, fill: str
) -> None:
    image, marker = _marked(seed)
    score = Counted(model)
    assert int(score(image[None]).argmax()) == 1
    score.images = 0

    found = segment_counterfactual(
        image, slic_segments(image, 16), fill_image(image, fill), score, 1, 8, 500, 16
    )

    assert found.valid and found.new_class == 0 and found.irreducible
    assert 1 <= len(found.segments) <= 2
    iou = (found.mask & marker).sum() / (found.mask | marker).sum()
    assert iou >= 0.5, f"the removed segments are not the marker (IoU {iou:.2f})"
    assert found.passes == score.images <= 500 + 1
    fresh = torch.softmax(model(found.image[None]), dim=1)[0]
    assert int(fresh.argmax()) == 0 and float(fresh[0]) == pytest.approx(found.probability)


def test_a_search_that_cannot_change_the_call_stops_at_its_cap_and_reports_none() -> None:
    stubborn = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 2)))
    with torch.no_grad():
        stubborn[1].weight.zero_()
        stubborn[1].bias.copy_(torch.tensor([0.0, 5.0]))
    image, _ = _marked(0)
    score = Counted(stubborn)

    found = segment_counterfactual(
        image, slic_segments(image, 16), fill_image(image, "blur"), score, 1, 8, 60, 16
    )

    assert not found.valid and found.segments == () and found.new_class == -1
    assert score.images == found.passes <= 60


def test_the_gradient_counterfactual_changes_the_marker_and_is_valid_on_a_fresh_pass(
    model: torch.jit.ScriptModule,
) -> None:
    images = torch.stack([_marked(seed)[0] for seed in range(3)])
    marker = _marked(0)[1]
    torch.manual_seed(0)
    score = Counted(model)

    found, passes = gradient_counterfactuals(
        images, torch.zeros(3, dtype=torch.long), model, score, 200, 0.02, 1.0, 0.5
    )

    assert score.images == 3, "one fresh pass per image"
    assert passes <= 3 * 200 + 3 and sum(r.passes for r in found) == passes
    for result in found:
        assert result.valid and result.new_class == 0
        fresh = torch.softmax(model(result.image[None]), dim=1)[0]
        assert int(fresh.argmax()) == 0
        inside = result.changed[marker].float().mean()
        outside = result.changed[~marker].float().mean()
        assert inside > 0.5 and outside < 0.05, "the change concentrates on the marker"
