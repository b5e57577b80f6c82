"""Gradient counterfactuals in the manner of Wachter, Mittelstadt and Russell (2017,
"Counterfactual Explanations without Opening the Black Box", Harvard Journal of Law &
Technology): the smallest change to the image that makes the model call another class.

The change ``δ`` to the image's pixels (in [0, 1], clamped) minimises the cross-entropy
of the target class (the most probable other class) plus ``l1`` times its mean absolute
value (the L1 distance) plus ``tv`` times its total variation (a smooth, compact
change), by Adam at ``lr`` for at most ``steps`` steps, a batch of images at a time
(seeded; only the images' gradients are taken). An image's change is kept from the first
step at which its call is the target; it is valid when a fresh forward pass on the
changed image calls the target.

Own code: the reference implementations (Alibi's, DiCE's) optimise tabular models or
Keras/TensorFlow ones, not a TorchScript image classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CHANGED", "GradientCounterfactual", "gradient_counterfactuals"]

CHANGED = 0.5
"""Share of the largest change (over the channels) at which a pixel is in the changed
region: where the change concentrates, however small it is."""

Scores = Callable[[torch.Tensor], torch.Tensor]
"""``(n, C, H, W)`` images in [0, 1] → ``(n, K)`` class scores, differentiable."""


@dataclass(frozen=True)
class GradientCounterfactual:
    """One image's gradient counterfactual.

    Attributes:
        image: ``(C, H, W)`` the changed image in [0, 1] (the original when none found).
        target: The class it was pushed towards.
        new_class: The class a fresh forward pass calls on it.
        probability: That class's probability.
        steps: Steps until the call changed (``steps`` when it never did).
        l1: Mean absolute change per pixel and channel.
        largest: The largest change of a pixel (over the channels).
        changed: ``(H, W)`` bool, pixels changed by at least :data:`CHANGED` of the largest
            change (none when nothing changed).
        valid: Whether the fresh pass calls the target.
        passes: Forward passes the image went through (every step its batch ran, and
            the fresh one).
    """

    image: torch.Tensor
    target: int
    new_class: int
    probability: float
    steps: int
    l1: float
    largest: float
    changed: torch.Tensor
    valid: bool
    passes: int


def _total_variation(delta: torch.Tensor) -> torch.Tensor:
    """``(n,)`` mean absolute difference between neighbouring pixels of each change."""
    down = (delta[:, :, 1:] - delta[:, :, :-1]).abs().mean(dim=(1, 2, 3))
    across = (delta[:, :, :, 1:] - delta[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return down + across


def gradient_counterfactuals(
    images: torch.Tensor, targets: torch.Tensor, scores: Scores,
    probabilities: Callable[[torch.Tensor], torch.Tensor], steps: int, lr: float, l1: float,
    tv: float,
) -> tuple[list[GradientCounterfactual], int]:  # fmt: skip
    """Counterfactuals of ``images`` ``(n, C, H, W)`` in [0, 1] towards ``targets``, and
    the forward passes run (each step's, then the fresh re-check's, per image)."""
    delta = torch.zeros_like(images, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=lr)
    kept = images.clone()
    reached = torch.full((len(images),), steps, dtype=torch.long)
    passes = ran = 0
    for step in range(steps):
        changed = (images + delta).clamp(0, 1)
        output = scores(changed)
        passes += len(images)
        ran += 1
        calls = output.detach().argmax(1)
        newly = (calls == targets) & (reached == steps)
        kept[newly] = changed.detach()[newly]
        reached[newly] = step
        if bool((reached < steps).all()):
            break
        loss = F.cross_entropy(output, targets, reduction="none")
        loss = loss + l1 * delta.abs().mean(dim=(1, 2, 3)) + tv * _total_variation(delta)
        (gradient,) = torch.autograd.grad(loss.sum(), [delta])
        delta.grad = gradient
        optimiser.step()
    with torch.no_grad():
        checked = probabilities(kept)
    passes += len(images)
    found = []
    for i in range(len(images)):
        difference = (kept[i] - images[i]).abs()
        per_pixel = difference.amax(0)
        largest = float(per_pixel.max())
        new_class = int(checked[i].argmax())
        valid = new_class == int(targets[i]) and int(reached[i]) < steps
        found.append(
            GradientCounterfactual(
                kept[i], int(targets[i]), new_class, float(checked[i, new_class]),
                int(reached[i]), float(difference.mean()), largest,
                (per_pixel >= CHANGED * largest) & (per_pixel > 0), valid, ran + 1,
            )
        )  # fmt: skip
    return found, passes
