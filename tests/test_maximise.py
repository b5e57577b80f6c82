"""Activation maximisation on the TorchScript forward: a linear unit's image converges to
its weights, beats every image of a data set, and the same seed gives the same bytes; the
Fourier parameterisation with colour decorrelation finds the colour a unit reads, and a
grayscale model gets a grayscale image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from auditor.concepts.maximise import Objective, maximise
from tests.helpers import loaded_model, torchscript_twin

SIZE = 16


class Linear(nn.Module):
    """``unit`` is <w, x> over the whole image (one output cell); the score is the same."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.unit = nn.Conv2d(weights.shape[1], 1, SIZE, bias=False)
        with torch.no_grad():
            self.unit.weight.copy_(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(x).flatten(1)


class RedUnit(nn.Module):
    """``mix`` channel 0 is the red excess (2r - g - b), averaged as the score."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([2.0, -1.0, -1.0]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x).mean(dim=(2, 3))


def _pixels(model, objectives, seed: int = 0, **kwargs):  # type: ignore[no-untyped-def]
    options = {"steps": 100, "size": SIZE, "lr": 0.05, "fourier": False, "robust": False}
    options.update(kwargs)
    return maximise(model, objectives, lambda x: x, (SIZE, SIZE), seed=seed, **options)


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_a_linear_units_image_converges_to_its_weights_and_beats_the_data(kind: str) -> None:
    # Signs of one magnitude: the image is bounded to [0, 1], so the best image is the
    # weights' sign pattern, and its cosine with the weights is 1 only when they share
    # one magnitude.
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(1, 3, SIZE, SIZE, generator=generator).sign()
    model = loaded_model(torchscript_twin(Linear(weights), kind, SIZE))

    result = _pixels(model, (Objective("unit 0", 0, "unit"), Objective("score", 0)))

    centred = torch.from_numpy(result.images[0]).flatten() - 0.5
    cosine = float(centred @ weights.flatten() / (centred.norm() * weights.norm()))
    assert cosine >= 0.95
    data = torch.rand(500, 3, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        best_in_data = float(model.module(data).max())
    assert result.values.min() > best_in_data
    assert result.passes == 100 * 2 + 2


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    model = loaded_model(torchscript_twin(RedUnit(), "script", SIZE))
    objectives = (Objective("red", 0, "mix"),)
    first, again, other = (
        _pixels(model, objectives, seed=s, steps=10, fourier=True, robust=True) for s in (3, 3, 4)
    )
    assert first.images.tobytes() == again.images.tobytes()
    assert first.images.tobytes() != other.images.tobytes()


def test_the_fourier_image_of_a_red_unit_is_red_and_a_grayscale_model_gets_one_channel() -> None:
    model = loaded_model(torchscript_twin(RedUnit(), "script", SIZE))
    objectives = (Objective("red", 0, "mix"),)
    result = _pixels(model, objectives, steps=200, lr=0.2, fourier=True, robust=True)
    red, green, blue = result.images[0].mean(axis=(1, 2))
    assert red > 0.8 and green < 0.25 and blue < 0.25

    gray = Linear(torch.ones(1, 1, SIZE, SIZE))
    gray_model = loaded_model(torchscript_twin(gray, "script", SIZE), channels=1)
    image = _pixels(gray_model, (Objective("score", 0),), steps=5, fourier=True).images
    assert image.shape == (1, 1, SIZE, SIZE) and np.isfinite(image).all()
