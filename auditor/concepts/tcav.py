"""Testing with concept activation vectors (TCAV; Kim, Wattenberg, Gilmer, Cai, Wexler,
Viegas and Sayres, 2018): does a class's score move along a concept's direction?

"Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
Activation Vectors", ICML 2018. A concept activation vector (CAV) is the normal of a
linear classifier separating a layer's activations of concept images from those of
random images (scikit-learn's ``SGDClassifier``, as Captum's default, seeded). The
directional derivative of the class score along it, for an image, is the gradient of the
score with respect to the layer's activations dotted with the CAV. The TCAV score is the
share of the class's images with a positive directional derivative; its magnitude, as
Captum's, the mean directional derivative. Each of ``runs`` CAVs uses another random set.

Significance departs from Kim et al.'s t-test of the concept's run scores against
random-vs-random runs, which is anti-conservative when the concept set is fixed (every
run shares its sampling noise): on a small model a set of random images taken as the
concept was significant at 0.05 in 6 of 20 seeds. Here the null is ``M`` random
pseudo-concepts, each scored as the concept is, over the same random sets: under the
null the concept's mean score is exchangeable with theirs, and the p-value is its rank
(two-sided, around the null's mean).

The gradients come from the tap layer (Captum's ``TCAV`` refuses a ScriptModule) and are
computed once per image: every CAV reuses them (one forward and one backward pass per
image, per layer and class). Sign counts equal Captum's ``TCAV`` with the same CAV on the
eager twin (``tests/test_tcav.py``).

The audit's CAVs live in channel space: a concept's activation is the layer's output
averaged over the concept's region (``regions``), and its direction is the CAV added at
every position, whose derivative is the gradient summed over space (``pool``). A
flattened CAV learns *where* a concept sits in its images as much as what it is: a spot
cropped from wherever it was said little about class images with the spot elsewhere
(score 0.42 on a class that reads the spot; pooled, 1.00). A pooled CAV is the flattened
one repeated over the positions, so Captum's sign counts still equal ours. When the
summed gradients of a class's images point one way (a near-linear head), a pooled score
is 0 or 1 for most directions, random ones included: the p-value says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.linear_model import SGDClassifier

from auditor.load import OutputKind, class_scores
from auditor.taps import Taps

__all__ = [
    "TcavResult",
    "concept_vector",
    "concept_vectors",
    "layer_activations",
    "layer_gradients",
    "one_direction",
    "tcav",
]


def layer_activations(
    tapped: Taps,
    images: torch.Tensor,
    layer: str,
    batch_size: int,
    regions: torch.Tensor | None = None,
) -> NDArray[np.float32]:
    """``(N, D)``: the layer's output for each image (``images`` normalised as the model
    expects), flattened; or, given ``regions`` (``(N, 1, H, W)`` weights at the input's
    size), each channel's mean over its image's region (the region averaged down to the
    layer's grid, as weights)."""
    parts = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            _, (activation,) = tapped(batch, [layer])
            if regions is None or activation.ndim != 4:
                parts.append(activation.flatten(1).float().cpu().numpy())
                continue
            grid = (int(activation.shape[2]), int(activation.shape[3]))
            region = regions[start : start + batch_size].to(activation.device, torch.float32)
            weights = F.adaptive_avg_pool2d(region, grid).flatten(2)  # (B, 1, h*w)
            pooled = (activation.flatten(2).float() * weights).sum(2)
            parts.append((pooled / weights.sum(2).clamp_min(1e-12)).cpu().numpy())
    return np.concatenate(parts)


def layer_gradients(
    tapped: Taps, images: torch.Tensor, layer: str, target: int, batch_size: int,
    pool: bool = False, kind: OutputKind = OutputKind.LOGITS,
) -> NDArray[np.float32]:  # fmt: skip
    """``(N, D)``: the gradient of the ``target`` score with respect to the layer's output
    for each image, flattened, or with ``pool`` summed over space: the derivative along a
    pooled CAV ``v`` added at every position, ``sum_hw g(h, w) . v``."""
    parts = []
    for batch in images.split(batch_size):
        output, (activation,) = tapped(batch, [layer])
        score = class_scores(output, kind)[:, target]  # a single logit z: (-z, z)
        (gradient,) = torch.autograd.grad(score.sum(), activation)
        summed = gradient.flatten(2).sum(2) if pool and gradient.ndim == 4 else gradient.flatten(1)
        parts.append(summed.float().cpu().numpy())
    return np.concatenate(parts)


def one_direction(gradients: NDArray[np.float32], tolerance: float = 1e-6) -> bool:
    """Whether every image's gradient ``(N, D)`` points the same way (cosine with the
    first at least ``1 - tolerance``): then ``g . v`` has one sign for every direction
    ``v``, and every TCAV score, a concept's or a random one's, is 0 or 1 (at the last
    stage before a pooled linear head, for one)."""
    norms = np.linalg.norm(gradients, axis=1)
    if len(gradients) < 2 or not (norms > 0).all():
        return False
    unit = gradients / norms[:, None]
    return bool((unit @ unit[0] >= 1 - tolerance).all())


def concept_vector(
    concept: NDArray[np.float32], random: NDArray[np.float32], seed: int
) -> NDArray[np.float64]:
    """The unit CAV pointing from ``random``'s activations towards ``concept``'s."""
    features = np.concatenate([concept, random])
    labels = np.r_[np.ones(len(concept)), np.zeros(len(random))]
    classifier = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed)
    classifier.fit(features, labels)
    vector = classifier.coef_[0].astype(np.float64)
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


@dataclass(frozen=True)
class TcavResult:
    """One concept's TCAV for one class at one layer.

    Attributes:
        scores: ``(runs,)`` share of the class's images moved up by each CAV (one per
            random set).
        magnitudes: ``(runs,)`` mean directional derivative of each CAV.
        null_scores: ``(M,)`` the mean score of each random pseudo-concept, over the same
            random sets.
        p_value: Two-sided: the share of pseudo-concepts at least as far from the null's
            mean as the concept (with the concept counted, so never below ``1 / (M + 1)``).
    """

    scores: NDArray[np.float64]
    magnitudes: NDArray[np.float64]
    null_scores: NDArray[np.float64]
    p_value: float

    @property
    def score(self) -> float:
        return float(self.scores.mean())

    @property
    def magnitude(self) -> float:
        return float(self.magnitudes.mean())

    def significant(self, alpha: float) -> bool:
        return bool(self.p_value < alpha)


def concept_vectors(
    concept: NDArray[np.float32], randoms: list[NDArray[np.float32]], seed: int
) -> NDArray[np.float64]:
    """``(runs, D)``: the CAV of ``concept`` against each random set (run ``i`` seeded
    ``seed + i``). A concept's CAVs serve every class."""
    return np.stack([concept_vector(concept, random, seed + i) for i, random in enumerate(randoms)])


def tcav(
    gradients: NDArray[np.float32],
    concept: NDArray[np.float64],
    pseudo: list[NDArray[np.float64]],
) -> TcavResult:
    """TCAV of one concept for one class: the class images' ``gradients`` (``(N, D)``),
    the concept's CAVs (``(runs, D)``, :func:`concept_vectors`) and the CAVs of random
    pseudo-concepts against the same random sets (the null)."""
    if len(concept) < 2 or len(pseudo) < 1:
        raise ValueError("TCAV needs at least two runs and one pseudo-concept")
    gradients64 = gradients.astype(np.float64)
    derivatives = concept @ gradients64.T
    scores, magnitudes = (derivatives > 0).mean(axis=1), derivatives.mean(axis=1)
    nulls = np.array([((cavs @ gradients64.T) > 0).mean() for cavs in pseudo])
    centre = nulls.mean()
    beyond = np.abs(nulls - centre) >= abs(scores.mean() - centre) - 1e-12
    p_value = (1 + int(beyond.sum())) / (len(nulls) + 1)
    return TcavResult(scores, magnitudes, nulls, float(p_value))
