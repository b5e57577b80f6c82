"""Auditor's trust metrics against Quantus (and scipy, scikit-image) on the same inputs.

Each test feeds the same maps, masks, images and noise to Auditor's function and to the
reference, configured so that the two definitions agree, and expects the same numbers.
Where they differ on purpose, or only under some settings, the test says how.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import quantus
import torch
from numpy.typing import NDArray
from quantus.functions import similarity_func
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from auditor.explain import ExplainContext, ExplainSettings
from auditor.explain.engine import build_context
from auditor.images import Preprocessing
from auditor.load import OutputKind, load_model
from auditor.measure.faithfulness import area, curves, pixel_order
from auditor.measure.localisation import energy_inside, pointing_hit, top_iou
from auditor.measure.similarity import gini, rank_correlation, ssim
from auditor.measure.stability import map_instability, noisy_copies

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIDE = 12  # 144 pixels: 12 deletion steps of 12 pixels, 36 values in Quantus's units
Floats = NDArray[np.float64]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Quantus's warnings about its own parameters
        yield


def integer_maps(seed: int, n: int = 6, levels: int = 3) -> Floats:
    """Signed 8×8 maps of integers in [-levels, levels]: ties, maxima shared by pixels."""
    return np.random.default_rng(seed).integers(-levels, levels + 1, (n, 8, 8)).astype(float)


def masks(seed: int, n: int = 6) -> NDArray[np.bool_]:
    out = np.random.default_rng(seed).random((n, 8, 8)) < 0.3
    out[:, 0, 0] = True  # never empty
    return out


def on_maps(metric: Any, maps: Floats, roi: NDArray[np.bool_] | None = None) -> Floats:
    """A Quantus metric that reads only the maps (and masks), on ``(N, H, W)`` maps."""
    n = len(maps)
    scores = metric(
        model=None,
        x_batch=np.zeros((n, 1, *maps.shape[1:])),
        y_batch=np.zeros(n, dtype=int),
        a_batch=maps[:, None].copy(),  # Sparseness adds its 1e-7 in place
        s_batch=None if roi is None else roi[:, None].astype(float),
    )
    return np.asarray(scores, dtype=float)


class Normalised(nn.Module):
    """The loaded TorchScript module behind Auditor's preprocessing: images in [0, 1] in."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module((x - self.mean) / self.std)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExplainContext, Normalised]:
    """Auditor's context on a conv-relu-GAP-linear TorchScript file, and Quantus's view."""
    torch.manual_seed(0)
    head = nn.Linear(8, 3)
    head.weight.data.mul_(8)  # spread the probabilities so that the curves move
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    path = tmp_path_factory.mktemp("model") / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        torch.jit.script(nn.Sequential(net, nn.Flatten(), head).eval()).save(str(path))
    loaded = load_model(path, torch.device("cpu"))
    settings = ExplainSettings(methods=("saliency",))
    preprocessing = Preprocessing(3, None, MEAN, STD)
    context, _, _ = build_context(loaded, OutputKind.LOGITS, None, settings, preprocessing)
    context.forward_batch = 5  # several chunks
    return context, Normalised(loaded.module).eval()


def test_gini_is_quantus_sparseness() -> None:
    maps = np.random.default_rng(1).normal(size=(5, 8, 8)) * [[[1]], [[10]], [[0.1]], [[1]], [[3]]]
    maps[3], maps[4, 2:] = 0.0, 0.0  # a flat map, a sparse one
    # normalise=False: Quantus's default divides by the largest value of the whole batch,
    # which moves the 1e-7 both add relative to the values (differences up to 2e-5 here).
    reference = on_maps(quantus.Sparseness(abs=True, normalise=False, disable_warnings=True), maps)
    np.testing.assert_allclose(gini(maps), reference, rtol=0, atol=1e-9)
    assert np.ptp(reference) > 0.3


def test_rank_correlation_is_spearman_with_ties() -> None:
    a, b = integer_maps(2), integer_maps(3)
    b[1], b[2] = a[1] * 2 + 1, -a[2]  # same order, reversed order
    ours = rank_correlation(a, b)
    scipy_rho = [spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(ours, scipy_rho, rtol=0, atol=1e-12)
    quantus_rho = similarity_func.correlation_spearman(
        a.reshape(6, -1), b.reshape(6, -1), batched=True
    )
    np.testing.assert_allclose(ours, quantus_rho, rtol=0, atol=1e-12)
    assert ours[1] == pytest.approx(1) and ours[2] == pytest.approx(-1)
    # Deliberate: scipy gives NaN for a constant map; Auditor 1 for two, 0 for one.
    flat = np.zeros((2, 4, 4))
    np.testing.assert_array_equal(rank_correlation(flat, flat + np.ones((2, 1, 1))), [1, 1])
    np.testing.assert_array_equal(rank_correlation(flat, a[:2, :4, :4]), [0, 0])


@pytest.mark.parametrize(("side", "window"), [(16, 7), (6, 5)])
def test_ssim_is_skimage_and_quantus_on_scaled_maps(side: int, window: int) -> None:
    rng = np.random.default_rng(side)
    a = rng.normal(size=(4, side, side))
    b = a * 3 + rng.normal(size=a.shape) * [[[0.1]], [[1]], [[3]], [[10]]]
    ours = ssim(a, b)
    pairs = [
        ((x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)) for x, y in zip(a, b, strict=True)
    ]
    sk = [structural_similarity(x, y, data_range=1.0, win_size=window) for x, y in pairs]
    np.testing.assert_allclose(ours, sk, rtol=0, atol=1e-12)
    # Quantus's ssim takes data_range from the pair's joint range and does not scale each
    # map: the same once both are min-max scaled (joint range 1), not on the raw maps.
    q = [similarity_func.ssim(x, y, win_size=window) for x, y in pairs]
    np.testing.assert_allclose(ours, q, rtol=0, atol=1e-12)
    assert np.all(np.diff(ours) < 0)  # more noise, less similar


def test_pointing_hit_is_quantus_pointing_game() -> None:
    maps, roi = integer_maps(4, n=12, levels=15), masks(5, n=12)
    metric = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)
    ours = pointing_hit(maps, roi)
    np.testing.assert_array_equal(ours, on_maps(metric, maps, roi))
    assert 0 < ours.sum() < 12


def test_energy_inside_is_quantus_attribution_localisation() -> None:
    maps, roi = np.random.default_rng(6).normal(size=(6, 8, 8)), masks(7)
    # abs=False too: Quantus's default abs=True would clip |map|, i.e. clip nothing.
    metric = quantus.AttributionLocalisation(
        positive_attributions=True, abs=False, normalise=False, weighted=False
    )
    # Quantus divides by the total + 1e-9.
    np.testing.assert_allclose(energy_inside(maps, roi), on_maps(metric, maps, roi), rtol=1e-8)
    # Deliberate: no positive attribution at all is NaN for Auditor, 0 for Quantus.
    assert np.isnan(energy_inside(-np.abs(maps[:1]), roi[:1])[0])


def test_top_iou_from_quantus_top_k_intersection() -> None:
    """Quantus's TopKIntersection is |top-k ∩ mask| / k, not an IoU; the IoU is
    I / (k + |mask| − I) with I that intersection (maps without ties: one top k)."""
    maps, roi, k = np.random.default_rng(8).normal(size=(6, 8, 8)), masks(9), 16
    metric = quantus.TopKIntersection(k=k, abs=False, normalise=False)
    intersection = on_maps(metric, maps, roi) * k
    expected = intersection / (k + roi.reshape(6, -1).sum(axis=1) - intersection)
    orders = pixel_order(torch.from_numpy(maps), torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(top_iou(orders, roi, k / 64), expected, rtol=0, atol=1e-12)
    assert np.ptp(expected) > 0.1


def test_deletion_curve_is_quantus_pixel_flipping(
    model: tuple[ExplainContext, Normalised], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PixelFlipping ranks the map broadcast to every channel, so ``features_in_step`` is
    3 values a pixel; its curve starts after the first step (ours at the image itself),
    and its per-sample AUC is the trapezoid rule with dx=1 over those ``steps`` points.
    Quantus sees the images in [0, 1] and the model behind the same normalisation, so
    Auditor's black (0 before normalisation) is ``perturb_baseline=0.0``."""
    context, wrapped = model
    steps, m = 12, 3
    display = torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(10))
    maps = np.random.default_rng(11).normal(size=(m, SIDE, SIDE))  # no ties
    orders = pixel_order(torch.from_numpy(maps), torch.Generator().manual_seed(0))
    deletion, _ = curves(context, display, 2, orders, steps)
    x = display.numpy()[None].repeat(m, axis=0)
    options: dict[str, Any] = {"perturb_baseline": 0.0, "normalise": False, "abs": False}

    def pixel_flipping(auc: bool) -> Floats:
        metric = quantus.PixelFlipping(
            features_in_step=3 * SIDE * SIDE // steps, return_auc_per_sample=auc, **options
        )
        a = maps[:, None].astype(np.float32)
        scores = metric(wrapped, x, np.full(m, 2), a, channel_first=True, softmax=True)
        return np.asarray(scores)

    reference = pixel_flipping(False)
    assert reference.shape == (m, steps)
    np.testing.assert_allclose(deletion[:, 1:], reference, rtol=0, atol=1e-6)
    with torch.no_grad():
        original = torch.softmax(wrapped(display[None]), dim=1)[0, 2].item()
    np.testing.assert_allclose(deletion[:, 0], original, rtol=0, atol=1e-6)
    assert np.ptp(deletion) > 0.05 and np.ptp(deletion[:, steps // 2]) > 1e-3
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # gone in NumPy 2.4
    auc = pixel_flipping(True)
    head = (deletion[:, 0] + deletion[:, 1]) / 2  # the first trapezoid, not in Quantus's
    np.testing.assert_allclose(area(deletion), (auc + head) / steps, rtol=0, atol=1e-6)


def grad_x_input(model: nn.Module, inputs: Any, targets: Any, **_: Any) -> NDArray[np.float32]:
    """``(N, H, W)`` gradient × input of the target score, summed over channels."""
    x = torch.as_tensor(np.asarray(inputs)).clone().requires_grad_(True)
    score = model(x)[torch.arange(len(x)), torch.as_tensor(np.asarray(targets))].sum()
    (gradient,) = torch.autograd.grad(score, x)
    return (gradient * x).sum(dim=1).detach().numpy()


def test_map_instability_is_quantus_maxsensitivity(
    model: tuple[ExplainContext, Normalised],
) -> None:
    """Auditor divides every map by its largest absolute value; Quantus's MaxSensitivity
    does so only with ``normalise=True`` (its default is False, though its docstring says
    True), and map by map only with ``normalise_axes`` leaving out the batch axis. The
    noise is Auditor's draw, replayed by a ``perturb_func``."""
    _, wrapped = model
    samples, n = 5, 2
    display = torch.rand(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(12))
    generator = torch.Generator().manual_seed(13)
    noise = noisy_copies(torch.zeros(n, 3, SIDE, SIDE), samples, 0.1, generator).numpy()
    targets = np.array([0, 1])
    draws = itertools.cycle(noise)

    def perturb(arr: NDArray[np.float32], indices: Any, **_: Any) -> NDArray[np.float32]:
        return arr + next(draws).reshape(arr.shape)

    metric = quantus.MaxSensitivity(
        nr_samples=samples,
        perturb_func=perturb,
        normalise=True,
        normalise_func_kwargs={"normalise_axes": (1, 2, 3)},
    )
    x = display.numpy()
    reference = metric(wrapped, x, targets, None, explain_func=grad_x_input, channel_first=True)
    ours = [
        map_instability(
            grad_x_input(wrapped, x[i : i + 1], targets[i : i + 1])[0],
            grad_x_input(wrapped, x[i] + noise[:, i], np.full(samples, targets[i])),
        )
        for i in range(n)
    ]
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=0)
    assert min(ours) > 0.1
