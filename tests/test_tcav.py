"""TCAV on the tap layer: a class whose score is one channel's mean moves along that
channel's concept and against the opposite one, random concepts are rarely significant,
and the sign counts equal Captum's TCAV on the eager twin with the same CAV.

Random concepts are significant no more often than the level says (the null is random
pseudo-concepts, not Kim et al.'s t-test, which is anti-conservative here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from auditor.concepts.tcav import (
    concept_vector,
    concept_vectors,
    layer_activations,
    layer_gradients,
    tcav,
)
from tests.helpers import loaded_model, torchscript_twin

SIZE = 8


class ChannelMean(nn.Module):
    """``mix`` makes channel 0 the red excess and channel 1 the green excess; class k's
    score is the mean of channel k where it is positive (so the gradient differs from one
    image to the next)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.mix.weight.copy_(
                torch.tensor([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5]])[..., None, None]
            )
            self.mix.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.mix(x)).mean(dim=(2, 3))


class Pooled(nn.Module):
    """``ChannelMean``'s channels averaged over 4x4 cells (a 2x2 grid at 8 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = ChannelMean().mix
        self.pool = nn.AvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.mix(x)).mean(dim=(2, 3))


def _images(n: int, rng: np.random.Generator, red: bool = False) -> torch.Tensor:
    images = rng.uniform(0, 1, size=(n, 3, SIZE, SIZE)).astype(np.float32)
    if red:
        images[:, 0] = rng.uniform(0.8, 1.0, size=(n, SIZE, SIZE))
        images[:, 1:] *= 0.3
    return torch.from_numpy(images)


def _sets(model, rng: np.random.Generator, n: int, count: int) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return [layer_activations(model.tapped, _images(n, rng), "mix", 8) for _ in range(count)]


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
def test_a_class_that_is_a_channel_mean_moves_along_that_channels_concept(kind: str) -> None:
    rng = np.random.default_rng(0)
    model = loaded_model(torchscript_twin(ChannelMean(), kind, SIZE))
    gradients = layer_gradients(model.tapped, _images(20, rng), "mix", 0, 8)
    randoms = _sets(model, rng, 30, 10)
    pseudo = [concept_vectors(p, randoms, 1) for p in _sets(model, rng, 30, 39)]
    red = layer_activations(model.tapped, _images(30, rng, red=True), "mix", 8)
    green = layer_activations(model.tapped, _images(30, rng, red=True)[:, [1, 0, 2]], "mix", 8)

    towards = tcav(gradients, concept_vectors(red, randoms, 0), pseudo)
    against = tcav(gradients, concept_vectors(green, randoms, 0), pseudo)

    assert towards.score >= 0.95 and towards.magnitude > 0 and towards.p_value < 0.05
    assert against.score <= 0.05 and against.p_value < 0.05, "green lowers class 0"


def test_random_concepts_are_significant_no_more_often_than_the_level() -> None:
    """Over 20 seeds, a set of random images taken as the concept: its p-value is a rank
    among 39 pseudo-concepts, so at most about 1 in 20 falls below 0.05 by chance."""
    model = loaded_model(torchscript_twin(ChannelMean(), "script", SIZE))
    significant = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        gradients = layer_gradients(model.tapped, _images(20, rng), "mix", 0, 8)
        randoms = _sets(model, rng, 30, 10)
        pseudo = [concept_vectors(p, randoms, seed) for p in _sets(model, rng, 30, 39)]
        concept = concept_vectors(_sets(model, rng, 30, 1)[0], randoms, seed)
        significant += tcav(gradients, concept, pseudo).significant(0.05)
    assert significant <= 3, f"{significant} of 20 random concepts significant at 0.05"


def _fixed(cav: np.ndarray):  # type: ignore[no-untyped-def]
    """A Captum concept classifier whose CAV is ``cav`` (injected, not trained)."""
    from captum.concept import Classifier

    class Fixed(Classifier):
        def __init__(self) -> None:
            pass

        def train_and_eval(self, dataloader, **kwargs):  # type: ignore[no-untyped-def]
            return {"accs": torch.tensor(1.0)}

        def weights(self) -> torch.Tensor:
            vector = torch.from_numpy(cav).float()
            return torch.stack([vector, -vector])

        def classes(self) -> list[int]:
            return [0, 1]

    return Fixed()


def _concept(identifier: int, name: str, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    from captum.concept import Concept

    data = torch.utils.data.DataLoader(_images(4, rng), batch_size=4)
    return Concept(identifier, name, iter(data))


def test_the_sign_counts_equal_captums_tcav_with_the_same_cav(tmp_path: Path) -> None:
    from captum.concept import TCAV

    rng = np.random.default_rng(1)
    eager = ChannelMean().eval()
    model = loaded_model(torchscript_twin(eager, "script", SIZE))
    images = _images(16, rng)
    concept_acts = layer_activations(model.tapped, _images(20, rng, red=True), "mix", 8)
    random_acts = layer_activations(model.tapped, _images(20, rng), "mix", 8)
    cav = concept_vector(concept_acts, random_acts, seed=0)
    ours = float((layer_gradients(model.tapped, images, "mix", 1, 8) @ cav > 0).mean())

    captum = TCAV(eager, ["mix"], classifier=_fixed(cav), save_path=str(tmp_path) + "/")
    scores = captum.interpret(images, [[_concept(0, "red", rng), _concept(1, "random", rng)]],
                              target=1)  # fmt: skip
    [by_layer] = scores.values()
    assert by_layer["mix"]["sign_count"][0].item() == pytest.approx(ours)


def test_a_regions_activation_is_its_masked_mean_at_the_layers_grid() -> None:
    rng = np.random.default_rng(2)
    eager = Pooled().eval()
    model = loaded_model(torchscript_twin(eager, "trace", SIZE))
    images = _images(3, rng)
    regions = torch.zeros(3, 1, SIZE, SIZE)
    regions[0, 0, :4, :4] = 1  # one cell of the 2x2 grid
    regions[1, 0, :, :2] = 1  # half of two cells
    regions[2] = 1
    ours = layer_activations(model.tapped, images, "pool", 2, regions)

    with torch.no_grad():
        grid = eager.pool(eager.mix(images))  # (3, 2, 2, 2)
    weights = torch.tensor([[1.0, 0, 0, 0], [0.5, 0, 0.5, 0], [1, 1, 1, 1]])  # row-major cells
    direct = (grid.flatten(2) * weights[:, None]).sum(2) / weights.sum(1, keepdim=True)
    np.testing.assert_allclose(ours, direct.numpy(), rtol=1e-6, atol=1e-6)


def test_pooled_sign_counts_equal_captums_with_the_cav_repeated_over_space(
    tmp_path: Path,
) -> None:
    from captum.concept import TCAV

    rng = np.random.default_rng(3)
    eager = ChannelMean().eval()
    model = loaded_model(torchscript_twin(eager, "trace", SIZE))
    images = _images(16, rng)
    whole = torch.ones(20, 1, SIZE, SIZE)
    concept_acts = layer_activations(model.tapped, _images(20, rng, red=True), "mix", 8, whole)
    random_acts = layer_activations(model.tapped, _images(20, rng), "mix", 8, whole)
    cav = concept_vector(concept_acts, random_acts, seed=0)
    gradients = layer_gradients(model.tapped, images, "mix", 0, 8, pool=True)
    ours = float((gradients @ cav > 0).mean())

    captum = TCAV(eager, ["mix"], classifier=_fixed(np.repeat(cav, SIZE * SIZE)),
                  save_path=str(tmp_path) + "/")  # fmt: skip
    scores = captum.interpret(images, [[_concept(0, "red", rng), _concept(1, "random", rng)]],
                              target=0)  # fmt: skip
    [by_layer] = scores.values()
    assert by_layer["mix"]["sign_count"][0].item() == pytest.approx(ours)
