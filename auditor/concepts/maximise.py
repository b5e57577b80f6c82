"""Activation maximisation: the image that most raises a class's score or a unit's mean
activation, found by gradient ascent on the TorchScript forward (Olah, Mordvintsev and
Schubert, "Feature Visualization", Distill 2017).

Lucent's recipe, ported onto the tap layer (Lucent reads layers through module hooks,
which a scripted model does not have):

* the image is parameterised in Fourier space, each frequency scaled by ``1 / f`` so that
  high frequencies start small (``fourier``), with colour decorrelation: the three
  channels are mixed by the square root of ImageNet's colour covariance (Lucent's
  ``color_correlation_svd_sqrt``) before a sigmoid makes them [0, 1]; a grayscale model
  gets one channel and no colour mixing. Without ``fourier`` the pixels themselves are
  optimised, through the sigmoid only (the reference test's case);
* transformation robustness: each step the image is padded (12 px of grey), jittered (8
  px), scaled (0.9 to 1.1), rotated (-10 to 10 degrees, 0 more often) and jittered again
  (4 px), then resized to the model's input, so the result does not rely on one exact
  pixel grid;
* Adam at the declared learning rate, all objectives in one batch (an image's objective
  reads only its own image: the model is in eval mode), seeded: the same seed gives the
  same bytes on the same machine and CPU (CUDA's backward passes of bilinear resizing and
  ``grid_sample`` are not deterministic, and a GPU takes more steps by default).

An objective is a class's score as the explanation methods read it (logits before the
softmax; a single binary logit ``z`` is ``-z`` for the first class; a model that outputs
probabilities is maximised on the probability, which saturates) or a unit's activation
averaged over its map.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from auditor.load import LoadedModel, OutputKind, class_scores

__all__ = ["Maximised", "Objective", "maximise"]

COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
"""Lucent's square root of ImageNet's colour covariance (its SVD), rows R, G, B."""

PAD, JITTER, LATE_JITTER = 12, 8, 4
SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
ANGLES = tuple(range(-10, 11)) + (0,) * 5


@dataclass(frozen=True)
class Objective:
    """What to raise: a class's score (``layer`` ``None``, ``index`` the class) or a
    unit's mean activation (``index`` the channel of ``layer``)."""

    name: str
    index: int
    layer: str | None = None


def _fourier_scale(size: int) -> torch.Tensor:
    """``(size, size // 2 + 1)``: ``1 / f`` per frequency, as Lucent's ``fft_image``."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return 1.0 / torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size)


class _Image:
    """The parameterised images: ``(N, C, size, size)`` in [0, 1] from the parameters."""

    def __init__(self, n: int, channels: int, size: int, fourier: bool,
                 generator: torch.Generator, device: torch.device) -> None:  # fmt: skip
        self.size, self.decorrelate = size, fourier and channels == 3
        shape = (n, channels, size, size // 2 + 1, 2) if fourier else (n, channels, size, size)
        start = torch.randn(shape, generator=generator) * 0.01  # drawn on the CPU: any device
        self.parameters = start.to(device).requires_grad_()
        self.scale = _fourier_scale(size)[None, None].to(device) if fourier else None
        root = COLOUR_SQRT / COLOUR_SQRT.norm(dim=0).max()  # Lucent's max_norm_svd_sqrt
        self.root = root.to(device)

    def pixels(self) -> torch.Tensor:
        x = self.parameters
        if self.scale is not None:
            spectrum = torch.view_as_complex(x) * self.scale
            x = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4
        if self.decorrelate:
            x = torch.einsum("rc,nchw->nrhw", self.root, x)
        return torch.sigmoid(x)


def _transform(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Lucent's standard transforms (pad, jitter, scale, rotate, jitter), one draw per step."""
    x = F.pad(images, (PAD,) * 4, value=0.5)
    x = _jitter(x, JITTER, rng)
    scale, angle = float(rng.choice(SCALES)), math.radians(float(rng.choice(ANGLES)))
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=x.device)
    theta = theta.expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return _jitter(x, LATE_JITTER, rng)


def _jitter(x: torch.Tensor, d: int, rng: np.random.Generator) -> torch.Tensor:
    dy, dx = (int(v) for v in rng.integers(0, d, size=2))
    return x[..., dy : x.shape[-2] - d + dy + 1, dx : x.shape[-1] - d + dx + 1]


def _values(model: LoadedModel, kind: OutputKind, inputs: torch.Tensor,
            objectives: tuple[Objective, ...]) -> torch.Tensor:  # fmt: skip
    """``(N,)``: objective ``i`` of image ``i``."""
    layers = sorted({o.layer for o in objectives if o.layer is not None})
    output, activations = model.tapped(inputs, layers)
    output = class_scores(output, kind)
    by_layer = dict(zip(layers, activations, strict=True))
    values = []
    for row, objective in enumerate(objectives):
        if objective.layer is None:
            values.append(output[row, objective.index])
        else:
            values.append(by_layer[objective.layer][row, objective.index].mean())
    return torch.stack(values)


@dataclass(frozen=True)
class Maximised:
    """The images (``(N, C, size, size)`` float32 in [0, 1]) and each objective's final
    value on its image (without transforms)."""

    objectives: tuple[Objective, ...]
    images: np.ndarray
    values: np.ndarray
    steps: int
    size: int
    lr: float
    passes: int
    seconds: float


def maximise(
    model: LoadedModel,
    objectives: tuple[Objective, ...],
    normalise: Callable[[torch.Tensor], torch.Tensor],
    input_size: tuple[int, int],
    *,
    steps: int,
    size: int,
    lr: float,
    seed: int,
    fourier: bool = True,
    robust: bool = True,
    kind: OutputKind = OutputKind.LOGITS,
) -> Maximised:
    """Raise each objective on its own image by ``steps`` of Adam (one forward and one
    backward pass of the batch per step). ``normalise`` maps [0, 1] images to the model's
    input (its mean and standard deviation); ``input_size`` is the model's ``(H, W)``."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    image = _Image(len(objectives), model.in_channels, size, fourier, generator, model.device)
    optimiser = torch.optim.Adam([image.parameters], lr=lr)

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(pixels, size=input_size, mode="bilinear", align_corners=False)
        return _values(model, kind, normalise(resized), objectives)

    for _ in range(steps):
        pixels = image.pixels()
        loss = -forward(_transform(pixels, rng) if robust else pixels).sum()
        # The image's gradient only: the model's weights get none, accumulated or kept.
        (image.parameters.grad,) = torch.autograd.grad(loss, [image.parameters])
        optimiser.step()
    with torch.no_grad():
        pixels = image.pixels()
        values = forward(pixels)
    return Maximised(
        objectives,
        pixels.float().cpu().numpy(),
        values.float().cpu().numpy(),
        steps,
        size,
        lr,
        steps * len(objectives) + len(objectives),
        time.perf_counter() - started,
    )
