"""Testing with concept activation vectors (TCAV; Kim, Wattenberg, Gilmer, Cai, Wexler,
Viegas and Sayres, 2018): does a class's score move along a concept's direction?

"Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
Activation Vectors", ICML 2018. A concept activation vector (CAV) is the normal of a
linear classifier separating a layer's activations of concept images from those of
random images (scikit-learn's ``SGDClassifier``, as Captum's default, seeded). The
directional derivative of the class score along it, for an image, is the gradient of the
score with respect to the layer's activations dotted with the CAV. The TCAV score is the
share of the class's images with a positive directional derivative; its magnitude, as
Captum's, the mean directional derivative. Each of ``runs`` CAVs uses another random set;
the scores are compared by a two-sided t-test with those of random-vs-random CAVs (the
null: a direction that means nothing), so a concept is significant only when its scores
differ from chance.

**Known limitation, why TCAV is not in the report yet**: the t-test over runs, as Kim et
al. specify it, is anti-conservative when the concept set is fixed (every run shares its
sampling noise, the null's held-out set has its own): on a small nonlinear model a set of
random images taken as the concept was significant at 0.05 in 6 of 20 seeds. A
calibrated test (random pseudo-concepts exchangeable with the concept set) is to come.

The gradients come from the tap layer (Captum's ``TCAV`` refuses a ScriptModule) and are
computed once per image: every CAV reuses them (one forward and one backward pass per
image, per layer and class). Sign counts equal Captum's ``TCAV`` with the same CAV on the
eager twin (``tests/test_tcav.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import ttest_ind
from sklearn.linear_model import SGDClassifier

from auditor.taps import TappedModel

__all__ = ["TcavResult", "concept_vector", "layer_activations", "layer_gradients", "tcav"]


def layer_activations(
    tapped: TappedModel, images: torch.Tensor, layer: str, batch_size: int
) -> NDArray[np.float32]:
    """``(N, D)``: the layer's output for each image, flattened (``images`` normalised as
    the model expects)."""
    parts = []
    with torch.inference_mode():
        for batch in images.split(batch_size):
            _, (activation,) = tapped(batch, [layer])
            parts.append(activation.flatten(1).float().cpu().numpy())
    return np.concatenate(parts)


def layer_gradients(
    tapped: TappedModel, images: torch.Tensor, layer: str, target: int, batch_size: int
) -> NDArray[np.float32]:
    """``(N, D)``: the gradient of the ``target`` score with respect to the layer's output,
    flattened, for each image."""
    parts = []
    for batch in images.split(batch_size):
        output, (activation,) = tapped(batch, [layer])
        (gradient,) = torch.autograd.grad(output[:, target].sum(), activation)
        parts.append(gradient.flatten(1).float().cpu().numpy())
    return np.concatenate(parts)


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
        scores: ``(runs,)`` share of the class's images moved up by each CAV.
        magnitudes: ``(runs,)`` mean directional derivative of each CAV.
        random_scores: ``(runs,)`` the same for random-vs-random CAVs.
        p_value: Two-sided t-test of ``scores`` against ``random_scores``.
    """

    scores: NDArray[np.float64]
    magnitudes: NDArray[np.float64]
    random_scores: NDArray[np.float64]
    p_value: float

    @property
    def score(self) -> float:
        return float(self.scores.mean())

    @property
    def magnitude(self) -> float:
        return float(self.magnitudes.mean())

    def significant(self, alpha: float) -> bool:
        return bool(self.p_value < alpha)


def tcav(
    gradients: NDArray[np.float32],
    concept: NDArray[np.float32],
    randoms: list[NDArray[np.float32]],
    seed: int,
) -> TcavResult:
    """TCAV of one concept from the class images' ``gradients`` (``(N, D)``), the concept's
    activations and the activations of ``runs + 1`` random sets: run ``i`` takes the CAV
    of the concept against random set ``i + 1``, and its null the CAV of random set 0
    (held out, standing in for a concept) against the same set, as Kim et al.'s
    random-vs-random experiments."""
    if len(randoms) < 2:
        raise ValueError("TCAV needs at least two random sets (one is held out for the null)")
    gradients64 = gradients.astype(np.float64)
    scores, magnitudes, nulls = [], [], []
    for run, random in enumerate(randoms[1:]):
        derivatives = gradients64 @ concept_vector(concept, random, seed + run)
        scores.append(float((derivatives > 0).mean()))
        magnitudes.append(float(derivatives.mean()))
        null = gradients64 @ concept_vector(randoms[0], random, seed + run)
        nulls.append(float((null > 0).mean()))
    concept_scores, random_scores = np.array(scores), np.array(nulls)
    return TcavResult(
        concept_scores, np.array(magnitudes), random_scores, _p_value(concept_scores, random_scores)
    )


def _p_value(scores: NDArray[np.float64], nulls: NDArray[np.float64]) -> float:
    """Two-sided t-test; when neither sample varies, 1 if they are equal, else 0."""
    if scores.std() == 0 and nulls.std() == 0:
        return 1.0 if scores[0] == nulls[0] else 0.0
    return float(ttest_ind(scores, nulls).pvalue)
